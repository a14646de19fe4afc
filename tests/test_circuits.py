"""The circuit breaker: its rules (pure), and its stores — the database (PostgreSQL and SQLite)
and Redis — shared correctly between concurrent callers, and failing safe when unreachable."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.test import override_settings

from monitors.circuits import CircuitBreaker, CircuitOpenError, machine
from monitors.circuits.stores import DatabaseStore, MemoryStore, RedisStore, StoreUnavailable
from monitors.models import Circuit, CircuitEvent
from tests.workers import fresh_redis_url

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def at(seconds):
    return T0 + timedelta(seconds=seconds)


def call(state, policy, seconds, failed, error="ConnectionError"):
    admission, transitions = machine.admit(state, policy, at(seconds))
    if admission.allowed:
        transitions += machine.record(state, policy, at(seconds), failed, admission, error if failed else "", "down" if failed else "")
    return admission, transitions


# -- the rules ---------------------------------------------------------------------------------


def test_it_opens_after_fail_max_consecutive_failures_and_a_success_resets_the_count():
    policy, state = machine.Policy(fail_max=3, failure_rate_threshold=0), machine.State()
    call(state, policy, 0, True)
    call(state, policy, 1, True)
    call(state, policy, 2, False)  # the run is broken
    call(state, policy, 3, True)
    call(state, policy, 4, True)
    assert state.state == "closed"
    _, transitions = call(state, policy, 5, True)
    assert state.state == "open" and state.opened_at == at(5) and state.open_count == 1
    assert transitions[0].cause == "3 consecutive failures" and transitions[0].error_type == "ConnectionError"


def test_it_opens_on_the_failure_rate_only_with_enough_calls_in_the_window():
    policy = machine.Policy(fail_max=100, failure_rate_threshold=50, minimum_calls=10, window=60)
    state = machine.State()
    for second in range(9):  # 9 calls, 5 failed: over 50 % but under the minimum volume
        call(state, policy, second, failed=second % 2 == 0)
    assert state.state == "closed"
    _, transitions = call(state, policy, 9, failed=True)  # 10 calls, 6 failed
    assert state.state == "open"
    assert transitions[0].cause == "60 % of 10 calls failed in 60 s"
    assert (transitions[0].window_calls, transitions[0].window_failures) == (10, 6)


def test_failures_older_than_the_window_do_not_count():
    policy = machine.Policy(fail_max=100, failure_rate_threshold=50, minimum_calls=4, window=10)
    state = machine.State()
    for second in range(3):
        call(state, policy, second, failed=True)
    for second in range(30, 33):
        call(state, policy, second, failed=False)
    call(state, policy, 33, failed=True)  # 4 calls in the window, 1 failed
    assert state.state == "closed"
    assert state.window_counts(policy, at(33)) == (4, 1)


def test_half_open_lets_exactly_the_trial_calls_through_and_closes_when_they_succeed():
    policy = machine.Policy(fail_max=1, reset_timeout=10, trial_calls=2)
    state = machine.State()
    call(state, policy, 0, True)
    refused, _ = machine.admit(state, policy, at(9))
    assert not refused.allowed and refused.retry_in == pytest.approx(1.0)
    first, transitions = machine.admit(state, policy, at(10))
    second, _ = machine.admit(state, policy, at(10))
    third, _ = machine.admit(state, policy, at(10))
    assert [first.trial, second.trial, third.allowed] == [True, True, False]
    assert transitions[0].to_state == "half_open"
    assert machine.record(state, policy, at(11), False, first) == []
    closed = machine.record(state, policy, at(11), False, second)
    assert state.state == "closed" and closed[0].cause == "2 trial calls succeeded"
    assert state.window == []  # the outage's failures do not count against the recovered service


def test_a_failed_trial_opens_it_again_for_a_new_cool_down():
    policy = machine.Policy(fail_max=1, reset_timeout=10, trial_calls=1)
    state = machine.State()
    call(state, policy, 0, True)
    _, transitions = call(state, policy, 12, True)
    assert [item.to_state for item in transitions] == ["half_open", "open"]
    assert state.opened_at == at(12) and state.open_count == 2
    assert not machine.admit(state, policy, at(20))[0].allowed


def test_a_trial_whose_caller_died_frees_its_permit_after_the_trial_timeout():
    policy = machine.Policy(fail_max=1, reset_timeout=10, trial_calls=1, trial_timeout=30)
    state = machine.State()
    call(state, policy, 0, True)
    assert machine.admit(state, policy, at(10))[0].trial  # taken, never reported
    assert not machine.admit(state, policy, at(39))[0].allowed
    assert machine.admit(state, policy, at(41))[0].trial


def test_forced_states_hold_until_an_operator_changes_them():
    policy = machine.Policy(fail_max=1, reset_timeout=1)
    state = machine.State()
    machine.force(state, policy, at(0), "forced_open", "user alice", "gateway maintenance")
    assert not machine.admit(state, policy, at(3600))[0].allowed
    machine.force(state, policy, at(1), "forced_closed", "user alice")
    for second in range(5):
        call(state, policy, 2 + second, True)
    assert state.state == "forced_closed" and state.consecutive_failures == 5
    transitions = machine.force(state, policy, at(10), "closed", "user bob")
    assert state.state == "closed" and state.consecutive_failures == 0 and transitions[0].cause == "reset by user bob"


def test_jobs_wait_the_rest_of_the_cool_down_plus_jitter():
    policy = machine.Policy(reset_timeout=30, wait_jitter=0.2)
    refused = machine.Admission(False, "open", retry_in=12.0)
    delays = [machine.wait_delay(policy, refused) for _ in range(200)]
    assert 12.0 <= min(delays) and max(delays) <= 18.0 and max(delays) - min(delays) > 3


def test_bad_options_fail_when_the_breaker_is_defined():
    with pytest.raises(ValueError, match="fail_max"):
        CircuitBreaker("svc", fail_max=0)
    with pytest.raises(ValueError, match="reset_timeout"):
        CircuitBreaker("svc", reset_timeout=-1)


# -- the stores --------------------------------------------------------------------------------


DATABASES = pytest.mark.django_db(transaction=True, databases=["default", "embedded"])


@pytest.fixture(params=[pytest.param("postgresql", marks=DATABASES), pytest.param("sqlite", marks=DATABASES), "redis", "memory"])
def store(request):
    kind = request.param
    if kind in ("postgresql", "sqlite"):
        alias = "default" if kind == "postgresql" else "embedded"
        Circuit.objects.using(alias).all().delete()
        yield DatabaseStore(alias)
    elif kind == "redis":
        yield RedisStore(fresh_redis_url(13))
    else:
        yield MemoryStore()


def test_every_store_lets_exactly_the_trial_calls_through_to_concurrent_callers(store):
    policy = machine.Policy(fail_max=1, reset_timeout=0.5, trial_calls=3)
    breaker = CircuitBreaker("racy-service", store=store, **policy.as_dict())
    with pytest.raises(ConnectionError), breaker:
        raise ConnectionError("down")
    assert breaker.state().state == "open"
    time.sleep(0.6)

    granted, refused = [], []
    start = threading.Barrier(12)

    def caller():
        start.wait()
        try:
            admission = breaker.before_call()
        except CircuitOpenError:
            refused.append(1)
            return
        granted.append(admission)

    threads = [threading.Thread(target=caller) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(granted), len(refused)) == (3, 9)
    assert breaker.state().state == "half_open"
    for admission in granted:
        breaker.after_call(admission)
    assert breaker.state().state == "closed"


def test_the_database_store_records_every_transition_with_its_cause_and_actor(transactional_db):
    breaker = CircuitBreaker("ledger", store=DatabaseStore("default"), fail_max=2, reset_timeout=0.2)
    for _ in range(2):
        with pytest.raises(TimeoutError), breaker:
            raise TimeoutError("ledger at ledger.internal:443 timed out")
    with pytest.raises(CircuitOpenError, match="'ledger' is open"), breaker:
        pass
    time.sleep(0.25)
    with breaker:
        pass

    events = list(CircuitEvent.objects.filter(circuit="ledger").order_by("id"))
    assert [(event.from_state, event.to_state) for event in events] == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert events[0].cause == "2 consecutive failures" and events[0].error_type == "TimeoutError"
    assert "ledger.internal:443" in events[0].error and "pid" in events[0].actor
    row = Circuit.objects.get(name="ledger")
    assert row.state == "closed" and row.open_count == 1 and row.policy["fail_max"] == 2


def test_a_failure_counts_even_when_the_task_transaction_rolls_back(transactional_db):
    from django.db import transaction

    breaker = CircuitBreaker("in-transaction", store=DatabaseStore("default"), fail_max=2)
    for _ in range(2):
        with pytest.raises(ConnectionError), transaction.atomic(), breaker:
            raise ConnectionError("down")
    assert Circuit.objects.get(name="in-transaction").state == "open"


def test_excluded_errors_are_the_callers_fault_not_the_services(transactional_db):
    class CardDeclined(Exception):
        pass

    breaker = CircuitBreaker("cards", store=MemoryStore(), fail_max=1, exclude=[CardDeclined])
    with pytest.raises(CardDeclined), breaker:
        raise CardDeclined("insufficient funds")
    assert breaker.state().state == "closed"


def test_settings_override_the_options_given_in_code():
    breaker = CircuitBreaker("tunable", store=MemoryStore(), fail_max=5, reset_timeout=60)
    with override_settings(JOBWATCH={"CIRCUITS": {"tunable": {"reset_timeout": 5}}, "CIRCUIT_DEFAULTS": {"trial_calls": 2}}):
        assert (breaker.policy.fail_max, breaker.policy.reset_timeout, breaker.policy.trial_calls) == (5, 5, 2)


# -- the shared store unreachable --------------------------------------------------------------


def test_with_redis_paused_calls_go_on_and_this_process_still_opens_on_its_own_failures():
    """Fail-safe direction: open to the fleet (a healthy service stays callable), closed to itself
    (a process that sees fail_max failures stops calling), and an open circuit stays open."""
    url = fresh_redis_url(13)
    breaker = CircuitBreaker("paused-store", store=RedisStore(url), fail_max=2, reset_timeout=30)
    admin = redis.Redis.from_url(url)
    admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")
    try:
        started = time.monotonic()
        with breaker:
            pass  # the service works: the call goes through although the store does not answer
        assert time.monotonic() - started < 2  # one short timeout, not one per call
        for _ in range(2):
            with pytest.raises(ConnectionError), breaker:
                raise ConnectionError("down")
        with pytest.raises(CircuitOpenError), breaker:
            pass
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()


def test_an_open_circuit_stays_open_while_its_store_is_away(transactional_db):
    from django.db import connection

    from tests.test_recorder_faults import set_connections_allowed

    store = DatabaseStore("default")
    breaker = CircuitBreaker("outage-during-outage", store=store, fail_max=1, reset_timeout=60)
    with pytest.raises(ConnectionError), breaker:
        raise ConnectionError("down")
    with pytest.raises(CircuitOpenError), breaker:
        pass  # reads (and remembers) the shared state: open
    database = store._connection().settings_dict["NAME"]
    set_connections_allowed(database, False)
    try:
        with pytest.raises(CircuitOpenError), breaker:
            pass
        with pytest.raises(StoreUnavailable):
            store.read("outage-during-outage")
    finally:
        set_connections_allowed(database, True)
        # The test's own pool holds connections the outage ended: start a fresh one.
        connection.close()
        connection.close_pool()


def test_successes_added_up_in_the_process_still_count_in_the_failure_rate():
    """A healthy circuit's successes are written in sums (one read per call, not a locked write);
    the next failure writes them first, so the failure rate sees every call."""
    breaker = CircuitBreaker("rates", store=MemoryStore(), fail_max=100, failure_rate_threshold=60, minimum_calls=10)
    for _ in range(10):
        with breaker:
            pass
    failures = 0
    while breaker.state().state == "closed":
        with pytest.raises(ConnectionError), breaker:
            raise ConnectionError("down")
        failures += 1
    assert failures == 15  # 15 of 25 calls = 60 %; without the 10 successes it would open at 10
    assert breaker.state().last_success_at is not None
