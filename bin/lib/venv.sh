# Shared by bin/demo and bin/test: find Python 3.12+, make .venv, install a requirements file
# only when it changed since the last install. Source it from the repository root.

find_python() {
    local candidate
    for candidate in python3 python3.13 python3.12; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "Jobwatch needs Python 3.12 or newer (python3, python3.13 or python3.12 on PATH)." >&2
    return 1
}

ensure_venv() {
    local requirements=$1 python stamp wanted
    if [ ! -x .venv/bin/python ]; then
        python=$(find_python)
        echo "Creating .venv with $("$python" --version)"
        "$python" -m venv .venv
        .venv/bin/python -m pip install --quiet --upgrade pip
    fi
    # Hash the requirements file and what it includes (-r), so an edit to either reinstalls.
    wanted=$(cat "$requirements" requirements.txt | sha256sum | cut -d' ' -f1)
    stamp=".venv/.installed-$(basename "$requirements")"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        echo "Installing $requirements"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$wanted" > "$stamp"
    fi
}
