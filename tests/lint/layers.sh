#!/usr/bin/env bash
# Dependencies one way: a folder of src/ may include only its own headers and those of the
# folders below it (docs/architecture.md). The libraries link only along these edges too, but
# an include of a header-only piece (a struct, an inline) from a folder above would not fail to
# link, so this checks the #include lines themselves.
#
#   tests/lint/layers.sh [SRC_DIR]
set -uo pipefail
src=${1:-$(dirname "$0")/../../src}

# folder -> the folders it may include (besides itself)
declare -A below=(
	[base]=""
	[crypto]="base"
	[auth]="base crypto"
	[proto]="base crypto"
	[wg]="base crypto"
	[offload]="base"
	[os]="base offload"
	[net]="base crypto os proto"
	[disco]="base crypto proto"
	[filter]="base crypto proto"
	[node]="base crypto proto wg offload os net portmap disco filter"
	[portmap]="base os"
	[control]="base crypto proto os net relay auth oidc policy"
	[oidc]="base"
	[policy]="base crypto proto"
	[relay]="base crypto proto net"
	[cli]="base crypto proto"
)

# One grep for the whole tree and bash's own regex per line: a fork per include line took
# 90 s on a loaded machine and hit the test's timeout.
re='^[[:space:]]*#[[:space:]]*include[[:space:]]+"([^/"]+)/'
bad=0
for dir in "$src"/*/; do
	folder=$(basename "$dir")
	if [[ ! -v below[$folder] ]]; then
		echo "layers: src/$folder is not in the layer table of $0" >&2
		bad=1
		continue
	fi
	allowed=" $folder ${below[$folder]} "
	while IFS=: read -r file line text; do
		[[ $text =~ $re ]] || continue
		inc=${BASH_REMATCH[1]}
		if [[ $allowed != *" $inc "* ]]; then
			echo "layers: ${file#"$src"/}:$line: src/$folder may not include $inc/ ($text)" >&2
			bad=1
		fi
	done < <(grep -nHE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"[^/"]+/' "$dir"*.[ch] 2>/dev/null)
done
((bad == 0)) && echo "layers: ok"
exit $bad
