# Shared by bin/demo and bin/test: find Python 3.12+, make .venv, and install a requirements file
# only when it, requirements.txt (which it may include) or pyproject.toml (the app's dependencies,
# which requirements.txt installs with `-e .`) changed since the last install.
# Source it from the repository root; `ensure_venv FILE` does all of it. VENV=… before sourcing
# picks another virtualenv (bin/test's oldest supported releases go to .venv-oldest).

VENV=${VENV:-.venv}
PYTHON="$VENV/bin/python"

say() { echo "$(basename "$0"): $*"; }
fail() { echo "$(basename "$0"): $*" >&2; exit 1; }

is_recent_python() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

# python3 first: pyenv and similar tools resolve it from the repository's .python-version.
find_python() {
    local candidate
    for candidate in python3 python3.13 python3.12; do
        if command -v "$candidate" >/dev/null 2>&1 && is_recent_python "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

create_venv() {
    local python
    python=$(find_python) || fail "Jobwatch needs Python 3.12 or newer; none of python3, python3.13, python3.12 is. Install one and run this again."
    say "creating $VENV with $("$python" --version 2>&1)"
    if ! "$python" -m venv "$VENV"; then
        rm -rf "$VENV"  # a half-made venv would pass for a good one next time
        fail "could not create $VENV. On Debian/Ubuntu install the venv module (apt install python3-venv) and run this again."
    fi
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --upgrade pip
}

ensure_venv() {
    local requirements=$1 wanted stamp
    if [[ ! -x "$PYTHON" ]]; then
        create_venv
    elif ! is_recent_python "$PYTHON"; then
        fail "$VENV has $("$PYTHON" --version 2>&1 || echo 'a broken Python'); Jobwatch needs 3.12 or newer. Remove $VENV and run this again."
    fi
    wanted=$(cat "$requirements" requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
    stamp="$VENV/.installed-$(basename "$requirements")"
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
        say "installing $requirements into $VENV (the first time takes a minute)"
        "$PYTHON" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$wanted" > "$stamp"
    fi
}
