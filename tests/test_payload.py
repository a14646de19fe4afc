"""What the recorder keeps of a job's arguments: secrets redacted, long values cut, size kept."""

from hypothesis import given, strategies as st

from monitors.recording.payload import REDACTED, PayloadCleaner

cleaner = PayloadCleaner(["password", "token", "apikey"], max_value_length=10, max_items=3)


def test_it_redacts_secret_keys_at_any_depth_and_in_any_spelling():
    args, kwargs, size, complete = cleaner.clean(
        [{"user": {"Password": "x"}}], {"API-Key": "k", "access_token": "t", "name": "ok"}
    )
    assert args == [{"user": {"Password": REDACTED}}]
    assert kwargs == {"API-Key": REDACTED, "access_token": REDACTED, "name": "ok"}
    assert complete is False


def test_it_truncates_long_values_and_keeps_the_original_size():
    args, kwargs, size, complete = cleaner.clean(["a" * 50, list(range(10))], {})
    assert args[0] == "a" * 10 + "… [50 chars]"
    assert args[1] == [0, 1, 2, "… [7 more items]"]
    assert size == len('[["' + "a" * 50 + '",[0,1,2,3,4,5,6,7,8,9]],{}]')
    assert complete is False


def test_it_marks_untouched_arguments_complete():
    assert cleaner.clean([1, "short", None], {"n": 2.5}) == ([1, "short", None], {"n": 2.5}, 28, True)


def test_it_keeps_the_text_of_values_json_cannot_hold():
    from datetime import date
    from decimal import Decimal

    args, _, _, _ = cleaner.clean([Decimal("1.5"), date(2026, 1, 2)], {})
    assert args == ["1.5", "2026-01-02"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@given(st.lists(json_values, max_size=5), st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_it_never_fails_and_never_leaks_a_secret(args, kwargs):
    kwargs = {"password": "hunter2-hunter2", **kwargs}
    cleaned_args, cleaned_kwargs, size, complete = cleaner.clean(args, kwargs)
    assert cleaned_kwargs.get("password", REDACTED) == REDACTED
    assert "hunter2" not in repr((cleaned_args, cleaned_kwargs))
    assert complete is False
