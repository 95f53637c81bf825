// The lab's OpenID provider: oidc-provider (a certified implementation) over HTTPS.
//
//   node idp.mjs DIR ISSUER HOST PORT
//
// DIR holds what the test made: cert.pem and key.pem (the lab CA's server certificate),
// jwks.json (private signing keys: RSA, EC P-256 and Ed25519, one per kid) and
// clients.json (the relying parties). Accounts: alice (verified email) and mallory
// (unverified) of example.com, erin of example.org, pat of example.net (verified); alice
// is in the groups eng and staff (the groups claim, with the profile scope). Its login form is oidc-provider's development form, which takes any
// password: the test drives it as a person would, but passwords are not what it tests.
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';

import Provider from 'oidc-provider';

const [dir, issuer, host, port] = process.argv.slice(2);
const read = (f) => fs.readFileSync(path.join(dir, f));

const accounts = {
	alice: { email: 'alice@example.com', email_verified: true, name: 'Alice Example',
		groups: ['eng', 'staff'] },
	mallory: { email: 'mallory@example.com', email_verified: false, name: 'Mallory' },
	erin: { email: 'erin@example.org', email_verified: true, name: 'Erin Example' },
	pat: { email: 'pat@example.net', email_verified: true, name: 'Pat Example' },
};

const provider = new Provider(issuer, {
	clients: JSON.parse(read('clients.json')),
	jwks: JSON.parse(read('jwks.json')),
	// The ID token carries the email and profile claims itself (the relying party reads
	// no userinfo).
	conformIdTokenClaims: false,
	claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'groups'] },
	enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256', 'EdDSA'] },
	pkce: { required: () => true },
	cookies: { keys: ['trellis-lab-cookie-key'] },
	ttl: { AuthorizationCode: 60, IdToken: 600, AccessToken: 600, Session: 600, Grant: 600,
		Interaction: 600 },
	async findAccount(ctx, id) {
		if (!Object.hasOwn(accounts, id))
			return undefined;
		return { accountId: id, claims: async () => ({ sub: id, ...accounts[id] }) };
	},
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.message));

const server = https.createServer({ cert: read('cert.pem'), key: read('key.pem') },
	provider.callback());
server.listen(Number(port), host, () => console.log(`idp listening on ${issuer}`));
process.on('SIGTERM', () => process.exit(0));
