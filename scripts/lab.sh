#!/usr/bin/env bash
# The lab of Debian hosts with systemd (scripts/lab.py says how it works):
#   scripts/lab.sh up [--hosts N] | down | status | ssh NODE [CMD...] |
#                  partition NODE | heal NODE | crash NODE | boot NODE | image
set -euo pipefail
exec /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/lab.py" "$@"
