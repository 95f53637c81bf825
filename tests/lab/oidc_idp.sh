# The lab's identity provider, for test_oidc.sh and test_oidc_web.sh (sourced after lib.sh
# and lab_init): a lab CA with certificates for the provider (idp, 192.0.2.30), the
# misbehaving provider (fake, .32) and two control servers (web1 .1, web2 .2);
# oidc-provider (npm, pinned in idp/package-lock.json) with the clients below, and
# idp/fake.mjs, both started and listening. Sets IDP_SRC, pki, spki (the provider's key
# hash, for the browser), ISS, REDIRECT (oidc-rp's), WEB1, WEB2 and the client secrets
# in $LAB_TMP/secret-{rs,es,ed,web}.
lab_require node openssl
[[ -x /usr/bin/chromium ]] || lab_skip "Debian's chromium is not installed"
IDP_SRC=$(cd "$(dirname "$0")/idp" && pwd)

if [[ ! -d $IDP_SRC/node_modules ]]; then
	log "npm ci in $IDP_SRC"
	(cd "$IDP_SRC" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund) >&2 ||
		{ fail "npm ci (oidc-provider, playwright-core)"; lab_finish; }
fi

# The lab CA and a certificate per provider address.
pki=$LAB_TMP/pki
mkdir -p "$pki" "$LAB_TMP/idp" "$LAB_TMP/fake" "$LAB_TMP/web1" "$LAB_TMP/web2"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj "/CN=trellis lab CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
for h in idp:30 fake:32 web1:1 web2:2; do
	d=$LAB_TMP/${h%%:*} addr=192.0.2.${h#*:}
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$addr" \
		-keyout "$d/key.pem" -out "$d/csr.pem" 2>/dev/null
	printf 'subjectAltName=IP:%s\n' "$addr" >"$d/ext"
	openssl x509 -req -in "$d/csr.pem" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
		-CAcreateserial -days 2 -extfile "$d/ext" -out "$d/cert.pem" 2>/dev/null
done
check "lab CA and provider certificates made" test -s "$LAB_TMP/fake/cert.pem"
spki=$(openssl x509 -in "$LAB_TMP/idp/cert.pem" -pubkey -noout |
	openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)

ISS=https://192.0.2.30:8443
REDIRECT=https://192.0.2.31:9443/oidc/callback
node "$IDP_SRC/tools.mjs" keys "$LAB_TMP/idp"
cp "$LAB_TMP/idp/rotate.json" "$LAB_TMP/fake/"
client() { # ID SECRET AUTH ALG
	printf '{"client_id":"%s","client_secret":"%s","redirect_uris":["%s"],"grant_types":["authorization_code"],"response_types":["code"],"token_endpoint_auth_method":"%s","id_token_signed_response_alg":"%s"}' \
		"$1" "$2" "$REDIRECT" "$3" "$4"
}
# The control servers' client: their login pages' callbacks (web1: the provider, web2: the
# mix-up through the fake provider).
WEB1=https://192.0.2.1:8443 WEB2=https://192.0.2.2:8443
web_client=$(printf '{"client_id":"trellis-web","client_secret":"web-secret-4","redirect_uris":["%s","%s"],"grant_types":["authorization_code"],"response_types":["code"],"token_endpoint_auth_method":"client_secret_basic","id_token_signed_response_alg":"RS256"}' \
	"$WEB1/register/oidc/callback" "$WEB2/register/oidc/callback")
printf '[%s,%s,%s,%s]\n' "$(client trellis-rs rs-secret-1 client_secret_basic RS256)" \
	"$(client trellis-es es-secret-2 client_secret_post ES256)" \
	"$(client trellis-ed ed-secret-3 client_secret_basic EdDSA)" "$web_client" \
	>"$LAB_TMP/idp/clients.json"
for c in rs:rs-secret-1 es:es-secret-2 ed:ed-secret-3 web:web-secret-4; do
	printf '%s\n' "${c#*:}" >"$LAB_TMP/secret-${c%%:*}"
done

lab_internet
lab_public_host idp 30
lab_public_host fake 32
# Not through nsx (a function): $! must be the provider itself, which the cleanup stops.
ip netns exec "$(ns_name idp)" node "$IDP_SRC/idp.mjs" "$LAB_TMP/idp" "$ISS" 192.0.2.30 8443 >"$LAB_TMP/idp.log" 2>&1 &
LAB_PIDS+=($!)
ip netns exec "$(ns_name fake)" node "$IDP_SRC/fake.mjs" "$LAB_TMP/fake" 192.0.2.32 8443 "$ISS" >"$LAB_TMP/fake.log" 2>&1 &
LAB_PIDS+=($!)
LAB_EXTRA_LOGS+=("idp=$LAB_TMP/idp.log" "fake=$LAB_TMP/fake.log")
check "the provider listens" wait_for 60 grep -q "idp listening" "$LAB_TMP/idp.log"
check "the fake provider listens" wait_for 60 grep -q "fake listening" "$LAB_TMP/fake.log"
