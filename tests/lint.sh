#!/usr/bin/env bash
# lint.sh — `make lint`: clang-format must leave every C file unchanged, and the banned functions
# (sprintf, strcpy, strcat, strtok, atoi, gets) must not appear in code.
set -u
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h' 2>/dev/null; git ls-files --others --exclude-standard '*.c' '*.h' 2>/dev/null)
rc=0
unformatted=""
for f in $files; do
    [ -f "$f" ] || continue
    clang-format --style=file "$f" | cmp -s - "$f" || unformatted="$unformatted $f"
done
if [ -n "$unformatted" ]; then
    echo "lint: not clang-formatted (run 'make format'):$unformatted"
    rc=1
fi
banned='\b(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|gets)[[:space:]]*\('
hits=$(grep -nE "$banned" $files 2>/dev/null | grep -vE '^\S+:[0-9]+:\s*(/\*|\*|//)' || true)
if [ -n "$hits" ]; then
    echo "lint: banned functions:"
    echo "$hits"
    rc=1
fi
[ $rc -eq 0 ] && echo "lint: ok ($(echo $files | wc -w) files)"
exit $rc
