// A misbehaving identity provider for the relying party's bounds:
//
//   node fake.mjs DIR HOST PORT [REAL-ISSUER]
//
// Each issuer path prefix is a behaviour; discovery documents are valid and point at
//   /slow  a JWKS endpoint that accepts the request and never answers
//   /down  a JWKS endpoint on PORT+1, where nothing listens
//   /big   a JWKS of 1 MiB (over the relying party's cap)
//   /bigdisco  (itself) a discovery document of 1 MiB
//   /rotate  a JWKS that rotates: odd-numbered fetches hold key old1, even ones new1
//            (DIR/rotate.json has both, private; only public members are served)
//   /mixup  a discovery document whose endpoints and keys are REAL-ISSUER's (oidc-provider's
//           /auth, /token, /jwks): that provider's tokens name another issuer than this one
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';

const [dir, host, port, realIssuer] = process.argv.slice(2);
const base = `https://${host}:${port}`;
const read = (f) => fs.readFileSync(path.join(dir, f));

function discovery(prefix, jwksUri) {
	const iss = base + prefix;
	return JSON.stringify({
		issuer: iss,
		authorization_endpoint: `${iss}/auth`,
		token_endpoint: `${iss}/token`,
		jwks_uri: jwksUri,
		response_types_supported: ['code'],
		code_challenge_methods_supported: ['S256'],
	});
}

const big = '{"keys":[' + '{"kty":"oct","k":"AAAA"},'.repeat(45000) + '{"kty":"oct","k":"AAAA"}]}';
const publicJwk = ({ d, p, q, dp, dq, qi, ...pub }) => pub;
const rotate = JSON.parse(read('rotate.json')).keys.map(publicJwk);
let rotateFetches = 0;

const routes = {
	'/rotate/.well-known/openid-configuration': () => discovery('/rotate', `${base}/rotate/jwks`),
	'/rotate/jwks': () => JSON.stringify({ keys: [rotate[rotateFetches++ % 2]] }),
	'/slow/.well-known/openid-configuration': () => discovery('/slow', `${base}/slow/jwks`),
	'/down/.well-known/openid-configuration':
		() => discovery('/down', `https://${host}:${Number(port) + 1}/jwks`),
	'/big/.well-known/openid-configuration': () => discovery('/big', `${base}/big/jwks`),
	'/big/jwks': () => big,
	'/bigdisco/.well-known/openid-configuration': () => big,
	'/mixup/.well-known/openid-configuration': () => JSON.stringify({
		issuer: `${base}/mixup`,
		authorization_endpoint: `${realIssuer}/auth`,
		token_endpoint: `${realIssuer}/token`,
		jwks_uri: `${realIssuer}/jwks`,
		response_types_supported: ['code'],
		code_challenge_methods_supported: ['S256'],
		token_endpoint_auth_methods_supported: ['client_secret_basic'],
	}),
};

const server = https.createServer({ cert: read('cert.pem'), key: read('key.pem') },
	(req, res) => {
		console.log(req.method, req.url);
		if (req.url === '/slow/jwks')
			return; // accepted, never answered
		const route = routes[req.url];
		if (!route) {
			res.writeHead(404).end();
			return;
		}
		res.writeHead(200, { 'content-type': 'application/json' }).end(route());
	});
server.listen(Number(port), host, () => console.log(`fake listening on ${base}`));
process.on('SIGTERM', () => process.exit(0));
