// Key and token tools for lab/test_oidc (Node's own crypto, no packages):
//
//   node tools.mjs keys DIR
//       DIR/jwks.json: the provider's private signing keys (kids rsa1, ec1, ed1);
//       DIR/rogue.json: an RSA key the provider never publishes (kid rogue1);
//       DIR/rotate.json: the fake provider's rotating keys (kids old1, new1)
//   node tools.mjs mint KEYS.json KID CLAIMS-JSON [ALG]
//       a compact JWS of CLAIMS-JSON signed with KID's key from KEYS.json; ALG "none"
//       makes an unsigned one; numeric claims "exp"/"iat" given as "+N"/"-N" are
//       seconds from now.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const b64 = (b) => Buffer.from(b).toString('base64url');

function jwk(type, opts, kid, alg) {
	const { privateKey } = crypto.generateKeyPairSync(type, opts);
	return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'keys') {
	const [dir] = args;
	const keys = [
		jwk('rsa', { modulusLength: 2048 }, 'rsa1', 'RS256'),
		jwk('ec', { namedCurve: 'P-256' }, 'ec1', 'ES256'),
		jwk('ed25519', {}, 'ed1', 'EdDSA'),
	];
	fs.writeFileSync(path.join(dir, 'jwks.json'), JSON.stringify({ keys }));
	fs.writeFileSync(path.join(dir, 'rogue.json'), JSON.stringify({
		keys: [jwk('rsa', { modulusLength: 2048 }, 'rogue1', 'RS256')] }));
	fs.writeFileSync(path.join(dir, 'rotate.json'), JSON.stringify({
		keys: [jwk('ec', { namedCurve: 'P-256' }, 'old1', 'ES256'),
			jwk('ec', { namedCurve: 'P-256' }, 'new1', 'ES256')] }));
} else if (cmd === 'mint') {
	const [file, kid, claimsText, algArg] = args;
	const key = JSON.parse(fs.readFileSync(file)).keys.find((k) => k.kid === kid);
	const claims = JSON.parse(claimsText);
	const now = Math.floor(Date.now() / 1000);
	for (const c of ['exp', 'iat', 'nbf'])
		if (typeof claims[c] === 'string')
			claims[c] = now + Number(claims[c]);
	const alg = algArg || key.alg;
	const input = `${b64(JSON.stringify({ alg, kid, typ: 'JWT' }))}.${b64(JSON.stringify(claims))}`;
	let sig = '';
	if (alg !== 'none') {
		const k = crypto.createPrivateKey({ key, format: 'jwk' });
		const md = alg === 'EdDSA' ? null : 'sha256';
		sig = b64(crypto.sign(md, Buffer.from(input), alg === 'ES256' ?
			{ key: k, dsaEncoding: 'ieee-p1363' } : k));
	}
	process.stdout.write(`${input}.${sig}\n`);
} else {
	console.error('usage: tools.mjs keys DIR | mint KEYS KID CLAIMS [ALG]');
	process.exit(2);
}
