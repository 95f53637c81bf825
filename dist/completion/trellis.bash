# bash completion for trellis(1), trellisd(8), trellis-control(8) and trellis-relay(8)

_trellis()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]} i cmd=
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		--socket) ((i++)) ;;
		-*) ;;
		*) cmd=${COMP_WORDS[i]}; break ;;
		esac
	done
	if [[ $prev == --socket ]]; then
		mapfile -t COMPREPLY < <(compgen -f -- "$cur")
		return
	fi
	case $cmd in
	'')
		mapfile -t COMPREPLY < <(compgen -W "--socket --help --version genkey genpsk pubkey
			up login set cert down logout status ip whois ping netcheck version help" -- "$cur")
		;;
	up | login)
		case $prev in
		--auth-key | --authkey) mapfile -t COMPREPLY < <(compgen -P file: -f -- "${cur#file:}") ;;
		--login-server | --hostname | --timeout) ;;
		*)
			local flags="--login-server --auth-key --hostname --timeout"
			[[ $cmd == up ]] && flags+=" --force-reauth"
			mapfile -t COMPREPLY < <(compgen -W "$flags" -- "$cur")
			;;
		esac
		;;
	set) [[ $prev == --hostname ]] || mapfile -t COMPREPLY < <(compgen -W "--hostname" -- "$cur") ;;
	cert)
		if [[ $prev == cert ]]; then
			mapfile -t COMPREPLY < <(compgen -W "request install" -- "$cur")
		elif [[ $prev == install ]]; then
			mapfile -t COMPREPLY < <(compgen -f -- "$cur")
		fi
		;;
	status | netcheck) mapfile -t COMPREPLY < <(compgen -W "--json" -- "$cur") ;;
	ping) [[ $prev == -c ]] || mapfile -t COMPREPLY < <(compgen -W "-c" -- "$cur") ;;
	ip) mapfile -t COMPREPLY < <(compgen -W "-4 -6" -- "$cur") ;;
	version) mapfile -t COMPREPLY < <(compgen -W "--daemon --json" -- "$cur") ;;
	esac
}
complete -F _trellis trellis

_trellisd()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
	case $prev in
	--state) mapfile -t COMPREPLY < <(compgen -d -- "$cur"); return ;;
	--socket) mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
	--log-level) mapfile -t COMPREPLY < <(compgen -W "err warn info debug" -- "$cur"); return ;;
	--portmap) mapfile -t COMPREPLY < <(compgen -W "auto off pcp nat-pmp upnp" -- "$cur"); return ;;
	--wg | --tun | --mtu | --workers | --port | --metrics-listen | --portmap-lifetime) return ;;
	esac
	mapfile -t COMPREPLY < <(compgen -W "--wg --mtu --workers --no-offload --log-level --state
		--socket --tun --port --metrics-listen --portmap --portmap-lifetime --filter-reject
		--foreground --version --help" -- "$cur")
}
complete -F _trellisd trellisd

_trellis_control()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]} i words=()
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		--state | --config) ((i++)) ;;
		-*) ;;
		*) words+=("${COMP_WORDS[i]}") ;;
		esac
	done
	if [[ $prev == --state ]]; then
		mapfile -t COMPREPLY < <(compgen -d -- "$cur")
		return
	fi
	if [[ $prev == --config || $prev == --oidc-client-secret-file || $prev == --oidc-ca-file ]]; then
		mapfile -t COMPREPLY < <(compgen -f -- "$cur")
		return
	fi
	case "${words[0]:-} ${words[1]:-}" in
	' ') mapfile -t COMPREPLY < <(compgen -W "--state --offline serve version help authkey apikey
		tailnets users nodes relaymap policy audit flows ca" -- "$cur") ;;
	'serve ') mapfile -t COMPREPLY < <(compgen -W "--config --listen --tls-cert --tls-key
		--metrics-listen --no-relay --stun-port --public-url --machine-cert-auto-renew
		--consumer-domains
		--oidc-issuer --oidc-client-id
		--oidc-client-secret-file --oidc-ca-file --oidc-allowed-domains
		--oidc-allowed-groups --oidc-groups-claim
		--oidc-allow-unverified-email --help" -- "$cur") ;;
	'help ') mapfile -t COMPREPLY < <(compgen -W "authkey apikey tailnets users nodes relaymap policy
		audit flows ca" -- "$cur") ;;
	'audit ') mapfile -t COMPREPLY < <(compgen -W "log verify prune --help" -- "$cur") ;;
	'flows ') mapfile -t COMPREPLY < <(compgen -W "list prune --node --since --flagged --json
		--help" -- "$cur") ;;
	'flows prune') mapfile -t COMPREPLY < <(compgen -W "--tailnet --before --older-than" -- "$cur") ;;
	'flows '*) mapfile -t COMPREPLY < <(compgen -W "--node --since --flagged --json --help" -- "$cur") ;;
	'ca ') mapfile -t COMPREPLY < <(compgen -W "init rotate retire show sign renew revoke list crl --help" -- "$cur") ;;
	'ca init') mapfile -t COMPREPLY < <(compgen -W "--tailnet --validity --import-cert --import-key" -- "$cur") ;;
	'ca sign') mapfile -t COMPREPLY < <(compgen -f -W "--tailnet --validity" -- "$cur") ;;
	'ca revoke') mapfile -t COMPREPLY < <(compgen -W "--tailnet" -- "$cur") ;;
	'ca show') mapfile -t COMPREPLY < <(compgen -W "--tailnet --json" -- "$cur") ;;
	'authkey ' | 'apikey ') mapfile -t COMPREPLY < <(compgen -W "create list revoke --help" -- "$cur") ;;
	'tailnets ') mapfile -t COMPREPLY < <(compgen -W "create list set --help" -- "$cur") ;;
	'tailnets set') mapfile -t COMPREPLY < <(compgen -W "--key-expiry --ephemeral-timeout
		--device-approval --require-2fa --require-machine-cert --flow-log --flow-log-interval
		--flow-retention"
		-- "$cur") ;;
	'users ') mapfile -t COMPREPLY < <(compgen -W "create list add passwd delete reset-2fa confirm-2fa --help" -- "$cur") ;;
	'users add') mapfile -t COMPREPLY < <(compgen -W "--admin --totp" -- "$cur") ;;
	'nodes ') mapfile -t COMPREPLY < <(compgen -W "list show pending approve expire delete rename set-expiry
		--help" -- "$cur") ;;
	'apikey create') mapfile -t COMPREPLY < <(compgen -W "--name --expiration" -- "$cur") ;;
	'apikey list') mapfile -t COMPREPLY < <(compgen -W "--json" -- "$cur") ;;
	'nodes show' | 'nodes pending') mapfile -t COMPREPLY < <(compgen -W "--tailnet --json" -- "$cur") ;;
	'relaymap ') mapfile -t COMPREPLY < <(compgen -W "set get reset" -- "$cur") ;;
	'relaymap set') mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
	'relaymap get') mapfile -t COMPREPLY < <(compgen -W "--json" -- "$cur") ;;
	'policy ') mapfile -t COMPREPLY < <(compgen -W "get set check reset explain matrix --help" -- "$cur") ;;
	'policy set' | 'policy check') mapfile -t COMPREPLY < <(compgen -f -W "--tailnet" -- "$cur") ;;
	'policy explain') mapfile -t COMPREPLY < <(compgen -W "--proto --tailnet --json" -- "$cur") ;;
	'policy get' | 'policy matrix') mapfile -t COMPREPLY < <(compgen -W "--tailnet --json" -- "$cur") ;;
	'policy reset') mapfile -t COMPREPLY < <(compgen -W "--tailnet" -- "$cur") ;;
	'authkey create') mapfile -t COMPREPLY < <(compgen -W "--tailnet --user --reusable --ephemeral
		--preauthorized --tags --expiration" -- "$cur") ;;
	*' list') mapfile -t COMPREPLY < <(compgen -W "--tailnet --json" -- "$cur") ;;
	esac
}
complete -F _trellis_control trellis-control

_trellis_relay()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
	case $prev in
	--tls-cert | --tls-key | --key | --mesh-key | --verify-secret)
		mapfile -t COMPREPLY < <(compgen -f -- "$cur")
		return
		;;
	--listen | --stun-port | --mesh-peer | --verify-clients) return ;;
	esac
	mapfile -t COMPREPLY < <(compgen -W "--listen --stun-port --tls-cert --tls-key --key
		--mesh-key --mesh-peer --verify-clients --verify-secret --version --help
		version" -- "$cur")
}
complete -F _trellis_relay trellis-relay
