#!/usr/bin/env bash
# Captures the netlink request that iproute2's `tc` sends, as golden bytes for src/tc/.
#
# Usage (root; needs `ip`, `tc` and `strace`):
#   capture.sh NAME TC-ARG...     capture one request, e.g.
#                                 capture.sh netem_delay qdisc add dev lo root handle 1: netem delay 100ms
#   capture.sh --all              re-capture every line of manifest.txt (next to this script)
#
# Arguments are passed to tc as argv (never through a shell). tc runs under strace in a throwaway
# network namespace (`faultd-golden-<pid>`, deleted on exit), so the host is never touched and the
# device `lo` always has ifindex 1. The kernel may reject the request (this CI kernel has no
# netem/prio): that does not matter, the bytes tc *sends* are what is recorded.
#
# Output, next to this script:
#   NAME.msg.hex   the whole RTM_NEWQDISC/RTM_NEWTCLASS message, nlmsg_seq zeroed (bytes 8..12)
#   NAME.opts.hex  the payload of its TCA_OPTIONS attribute (what src/tc encoders produce)
# Both are lowercase hex, 16 bytes per line, after `#` comment lines naming the tc command.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() { echo "capture.sh: $*" >&2; exit 1; }

ns="faultd-golden-$$"
trace=""
cleanup() {
	ip netns del "$ns" 2>/dev/null || true
	[[ -z "$trace" ]] || rm -f "$trace"
	trace=""
}
trap cleanup EXIT

capture_one() {
	local name="$1"; shift
	[[ "$name" =~ ^[a-z0-9_]+$ ]] || die "bad golden name '$name'"
	trace="$(mktemp)"
	ip netns add "$ns"
	# -e write=all dumps every byte the traced process sends; tc's exit status is irrelevant.
	ip netns exec "$ns" strace -f -o "$trace" -e trace=sendmsg -e write=all -s 65536 tc "$@" \
		>/dev/null 2>&1 || true
	# Hex-dump lines of the first sendmsg whose nlmsg_type is RTM_NEWQDISC (0x24) or
	# RTM_NEWTCLASS (0x28).
	local hex
	hex="$(awk '
		/sendmsg\(/ { inmsg = ($0 ~ /RTM_NEWQDISC|RTM_NEWTCLASS/) && !done; if (!inmsg && got) done = 1; next }
		# " | 00000  4c 00 ... 06  56 34 ... 00  <ascii>": the hex bytes are columns 11..58.
		inmsg && /^ \| [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]  / {
			n = split(substr($0, 11, 48), bytes, " ")
			for (i = 1; i <= n; i++) printf "%s ", bytes[i]
			got = 1
		}
	' "$trace")"
	[[ -n "$hex" ]] || die "no RTM_NEWQDISC/RTM_NEWTCLASS message captured for: tc $*"
	local -a b
	read -r -a b <<<"$hex"
	local len=$((16#${b[3]}${b[2]}${b[1]}${b[0]}))
	((len == ${#b[@]})) || die "message length $len != captured ${#b[@]} bytes"
	b[8]=00 b[9]=00 b[10]=00 b[11]=00
	# Walk the attributes after nlmsghdr (16) + tcmsg (20) to find TCA_OPTIONS (type 2).
	local off=36 opts=()
	while ((off + 4 <= len)); do
		local alen=$((16#${b[off + 1]}${b[off]}))
		local atype=$(((16#${b[off + 3]}${b[off + 2]}) & 0x3fff))
		((alen >= 4)) || die "bad attribute length at $off"
		if ((atype == 2)); then
			opts=("${b[@]:off+4:alen-4}")
		fi
		off=$((off + ((alen + 3) & ~3)))
	done
	local header="# tc $*
# captured from: $(tc -V 2>&1 | head -n1)
# /proc/net/psched: $(tr '\n' ' ' </proc/net/psched)"
	write_hex "$here/$name.msg.hex" "$header
# whole netlink message, nlmsg_seq zeroed" "${b[@]}"
	write_hex "$here/$name.opts.hex" "$header
# TCA_OPTIONS payload" "${opts[@]}"
	echo "captured $name: ${len} bytes, TCA_OPTIONS ${#opts[@]} bytes"
	cleanup
}

write_hex() {
	local file="$1" header="$2"; shift 2
	{
		echo "$header"
		local i=0
		for x in "$@"; do
			printf '%s' "$x"
			i=$((i + 1))
			if ((i % 16 == 0)); then echo; else printf ' '; fi
		done
		((i % 16 == 0)) || echo
	} | sed 's/ $//' >"$file"
}

[[ $# -ge 1 ]] || die "usage: capture.sh NAME TC-ARG... | capture.sh --all"
if [[ "$1" == "--all" ]]; then
	# manifest.txt: one golden per line, `NAME TC-ARG...` split on whitespace; `#` starts a comment.
	while read -r -a line; do
		[[ ${#line[@]} -eq 0 || "${line[0]}" == \#* ]] && continue
		capture_one "${line[@]}"
	done <"$here/manifest.txt"
else
	capture_one "$@"
fi
