#!/usr/bin/env bash
# Render a fixed list of Debian section-1 manual pages to plain text, one file per page, in
# demo/manpages-bench/corpus/<name>.txt. The first line of each file is a title such as
# "sort(1) - sort lines of text files", then a blank line, then the page as man renders it.
#
# Deterministic: the same installed pages give byte-identical files on every run (C locale,
# fixed width, no hyphenation, no justification, overstrikes stripped, tabs expanded,
# trailing blanks removed, runs of blank lines squeezed).
#
# Usage: bash demo/manpages-bench/build_corpus.sh [MANDIR]  (default MANDIR: /usr/share/man/man1)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mandir="${1:-/usr/share/man/man1}"
out="$here/corpus"

# The chosen pages (Debian package in the comment). Kept sorted; edit here to change the corpus.
pages=(
  # coreutils
  base64 basename cat chmod chown cksum comm cp csplit cut date dd df dirname du env expand
  factor fmt fold head install join ln ls md5sum mkdir mktemp mv nice nl nohup nproc numfmt od
  paste pr printf readlink realpath rm seq sha256sum shred shuf sleep sort split stat stdbuf tac
  tail tee timeout touch tr truncate uniq wc
  # diffutils
  cmp diff diff3 sdiff
  # others: grep, sed, gzip, bzip2, xz-utils, zstd, tar, findutils, patch, less, procps,
  # util-linux, bsdextrautils, xxd, file, make
  grep sed gzip bzip2 xz zstd tar find xargs patch less watch free kill pgrep flock ionice
  fallocate column xxd file make
)

export LC_ALL=C LANG=C MANWIDTH=100 MANPAGER=cat PAGER=cat
unset MAN_KEEP_FORMATTING MANOPT MANROFFOPT GROFF_SGR 2>/dev/null || true

render() { # $1: path of the page source (.1 or .1.gz); plain text on stdout
  local src="$1"
  if command -v man >/dev/null 2>&1; then
    man --nh --nj -P cat -l "$src" 2>/dev/null
  else
    # Fallback without man-db: groff directly (the output may differ in small ways).
    echo "warning: man not found, rendering $src with groff" >&2
    { case "$src" in *.gz) zcat "$src" ;; *) cat "$src" ;; esac; } |
      groff -t -man -Tascii -rLL=100n -rHY=0 -dAD=l -P-cbou 2>/dev/null
  fi
}

mkdir -p "$out"
rm -f "$out"/*.txt

for name in "${pages[@]}"; do
  src=""
  for candidate in "$mandir/$name.1.gz" "$mandir/$name.1"; do
    if [[ -e "$candidate" ]]; then src="$candidate"; break; fi
  done
  if [[ -z "$src" ]]; then
    echo "skip: no manual page for $name in $mandir" >&2
    continue
  fi
  body="$(render "$src" | col -bx | sed -e 's/[[:space:]]*$//' | cat -s)"
  if [[ -z "$body" ]]; then
    echo "skip: $src rendered to nothing" >&2
    continue
  fi
  # The one-line description: the first line of the NAME section without the names before
  # its last " - " ("sort - sort lines of text files"; mdoc pages write " -- ").
  description="$(printf '%s\n' "$body" |
    awk 'done {next} /^NAME$/ {on=1; next} on && NF {sub(/^ +/, ""); print; done=1}' |
    sed -E 's/^.* --? //')"
  {
    printf '%s(1) - %s\n\n' "$name" "$description"
    printf '%s\n' "$body"
  } > "$out/$name.txt"
done

count="$(find "$out" -maxdepth 1 -name '*.txt' | wc -l)"
bytes="$(cat "$out"/*.txt | wc -c)"
echo "wrote $count documents ($bytes bytes) to $out"
