#!/bin/sh
# Prints the version the build embeds: the nearest tag vN.N.N (with commits since and the
# commit, as git describe says them), else the project version with the commit, and
# "-dirty" for a tree with changes. Without git (a release tarball): the project version.
# Usage: scripts/version.sh PROJECT_VERSION [SOURCE_DIR]
v=$1
dir=${2:-.}
if d=$(git -C "$dir" describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
	echo "${d#v}"
elif h=$(git -C "$dir" rev-parse --short=12 HEAD 2>/dev/null); then
	dirty=
	git -C "$dir" diff-index --quiet HEAD -- 2>/dev/null || dirty=-dirty
	echo "$v-g$h$dirty"
else
	echo "$v"
fi
