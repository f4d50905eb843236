# Sourced by tools/setup: install Debian's newest 7.3 kernel from trixie-backports for the VM
# lane (Soft-RoCE works inside network namespaces from Linux 7.1), without touching the
# machine's apt configuration and without any trixie userland:
#
#   install_backports_kernel ROOT   # ROOT=/ for real; another directory to try it out
#
# A private apt (temporary sources list for trixie-backports on the machine's own Debian
# mirror, private lists/cache/state, no dpkg status) finds and downloads the
# linux-binary-<release> and linux-modules-<release> packages; `dpkg -x` unpacks them and
# ROOT/lib/modules/<release> receives usr/lib/modules/<release> (vmlinuz included), then
# `depmod -b ROOT <release>`. Nothing is installed through dpkg, so removing the kernel is
# `rm -r /lib/modules/<release>`. Quick when the kernel is already there (no network).

BACKPORTS_SERIES=${TESTBED_BACKPORTS_KERNEL:-7.3}
BACKPORTS_SUITE=trixie-backports

# The Debian mirror this machine already uses (TESTBED_DEBIAN_MIRROR overrides): the URI of
# the deb822 stanza or sources.list line for its own release's suite.
debian_mirror() {
  if [ -n "${TESTBED_DEBIAN_MIRROR:-}" ]; then echo "$TESTBED_DEBIAN_MIRROR"; return; fi
  local codename uri=""
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  shopt -s nullglob
  local sources=(/etc/apt/sources.list.d/*.sources) lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
  shopt -u nullglob
  if ((${#sources[@]})); then
    uri=$(awk -v want="$codename" 'BEGIN { RS = "" }
      { u = ""; ok = 0; n = split($0, line, "\n")
        for (i = 1; i <= n; i++) {
          if (line[i] ~ /^URIs:/) { split(line[i], w, " "); u = w[2] }
          if (line[i] ~ /^Suites:/) { m = split(line[i], w, " "); for (j = 2; j <= m; j++) if (w[j] == want) ok = 1 }
        }
        if (ok && u != "") { print u; exit } }' "${sources[@]}")
  fi
  if [ -z "$uri" ]; then
    uri=$(awk -v want="$codename" '$1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == want) { print $i; exit } }' "${lists[@]}" 2>/dev/null || true)
  fi
  if [ -z "$uri" ]; then
    echo "tools/setup: cannot find the Debian mirror for '$codename' in /etc/apt/sources.list{,.d}:" \
         "set TESTBED_DEBIAN_MIRROR (e.g. http://deb.debian.org/debian)" >&2
    return 1
  fi
  echo "${uri%/}"
}

install_backports_kernel() (  # a subshell: its EXIT trap removes the scratch directory
  set -euo pipefail
  local root=${1%/} have
  for have in "$root"/lib/modules/"$BACKPORTS_SERIES".*+deb13-amd64; do
    if [ -f "$have/vmlinuz" ] && [ -f "$have/modules.dep" ]; then
      return 0  # installed (depmod's index is written last)
    fi
  done
  local mirror tmp
  mirror=$(debian_mirror) || return 1
  tmp=$(mktemp -d /tmp/testbed-backports.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/archives/partial" "$tmp/cache" "$tmp/state" "$tmp/debs" "$tmp/x"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $BACKPORTS_SUITE main" \
    >"$tmp/sources.list"
  local apt=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State=$tmp/state" -o "Dir::State::Lists=$tmp/lists" -o Dir::State::Status=/dev/null
             -o "Dir::Cache=$tmp/cache" -o "Dir::Cache::Archives=$tmp/archives"
             -o APT::Sandbox::User=root)
  echo "tools/setup: looking up Linux $BACKPORTS_SERIES in $mirror $BACKPORTS_SUITE (private apt lists)" >&2
  apt-get "${apt[@]}" -q update >&2
  local pattern release
  pattern="^linux-binary-${BACKPORTS_SERIES//./\\.}\\.[0-9]+\\+deb13-amd64$"
  release=$(apt-cache "${apt[@]}" pkgnames linux-binary- | grep -E "$pattern" | sed 's/^linux-binary-//' |
            sort -V | tail -n 1)
  if [ -z "$release" ]; then
    echo "tools/setup: no linux-binary-$BACKPORTS_SERIES.*+deb13-amd64 in $BACKPORTS_SUITE at $mirror" >&2
    return 1
  fi
  echo "tools/setup: downloading linux-binary-$release and linux-modules-$release" >&2
  (cd "$tmp/debs" && apt-get "${apt[@]}" -q download "linux-binary-$release" "linux-modules-$release" >&2)
  local deb
  for deb in "$tmp"/debs/*.deb; do
    dpkg -x "$deb" "$tmp/x"
  done
  if [ ! -f "$tmp/x/usr/lib/modules/$release/vmlinuz" ]; then
    echo "tools/setup: the packages of $release hold no usr/lib/modules/$release/vmlinuz" >&2
    return 1
  fi
  rm -f "$tmp/x/usr/lib/modules/$release/modules.dep"  # depmod writes it, last
  mkdir -p "$root/lib/modules"
  cp -a "$tmp/x/usr/lib/modules/$release" "$root/lib/modules/"
  depmod -b "$root/" "$release"
  echo "tools/setup: installed Linux $release in $root/lib/modules/$release (for testbed vm --kernel $BACKPORTS_SERIES)" >&2
)
