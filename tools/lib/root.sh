# Sourced by tools/setup, tools/test and tools/demo: run the calling script as root.
#
#   as_root "$0" "$@"
#
# Returns at once when already root (a container, CI, `su -`). Otherwise re-executes the
# script through sudo, handing over the TESTBED_* and CI variables and the proxy settings
# (sudo's env_reset would drop them) -- so the README's commands work both as root on a
# machine without sudo and as a normal user with sudo. Neither root nor sudo: a one-line
# refusal and exit status 4 (testbed's "not root").
as_root() {
  local script name
  script=$(readlink -f "$1")
  name="tools/$(basename "$script")"
  shift
  [ "$(id -u)" -eq 0 ] && return 0
  if ! command -v sudo >/dev/null 2>&1; then
    echo "$name: needs root, and sudo is not installed: run it as root (e.g. \`su -c $script\`)" >&2
    exit 4
  fi
  local keep=() var
  for var in $(compgen -e); do
    case "$var" in
      TESTBED_*|CI|http_proxy|https_proxy|no_proxy|HTTP_PROXY|HTTPS_PROXY|NO_PROXY) keep+=("$var=${!var}") ;;
    esac
  done
  echo "$name: not root: re-running through sudo" >&2
  exec sudo -- /usr/bin/env "${keep[@]}" "$script" "$@"
}
