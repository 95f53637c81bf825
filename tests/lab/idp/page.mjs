// A person signing in with the identity provider on the control server's login page, in
// Debian's Chromium (headless, driven by playwright-core; no browser is downloaded):
//
//   node page.mjs URL LOGIN SPKI-HASHES [forge]
//
// Opens URL (the login URL `trellis up` printed), presses the page's "Sign in with ..."
// button, signs in as LOGIN at the provider's form, approves its consent page and waits
// for the control server's answer. Certificates are accepted by their key hashes alone
// (SPKI-HASHES, comma-separated: the provider's and the control server's).
// With "forge", while the provider's form is open (the server waits for the callback):
//   - the callback with a forged state, in the same browser, is refused;
//   - the callback with the real state in another browser (no session cookie) is refused;
// then the sign-in goes on and must still work.
// Prints one JSON object: the page's status and session cookie, the final page's text
// (done: .ok, msg: .msg) and what the forgeries got.
import { chromium } from 'playwright-core';

const [url, login, spkis, mode] = process.argv.slice(2);
const origin = new URL(url).origin;
const out = {};
const browser = await chromium.launch({
	executablePath: '/usr/bin/chromium',
	args: ['--headless', '--no-sandbox', '--disable-background-networking',
		'--disable-component-update', '--disable-sync',
		`--ignore-certificate-errors-spki-list=${spkis}`],
});
try {
	const ctx = await browser.newContext();
	const page = await ctx.newPage();
	page.setDefaultTimeout(30000);
	// The provider's authorization request carries the state the server made.
	let state = null;
	page.on('request', (r) => {
		const u = new URL(r.url());
		if (u.pathname.endsWith('/auth') && u.searchParams.get('state'))
			state = state || u.searchParams.get('state');
	});
	const first = await page.goto(url);
	out.status = first.status();
	out.cookie = (await ctx.cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly,
		sameSite: c.sameSite, secure: c.secure, path: c.path }));
	out.button = (await page.textContent('a.button')).trim();
	await Promise.all([page.waitForNavigation(), page.click('a.button')]);
	// The provider's pages, until its answer brings the browser back to the server.
	for (let i = 0; i < 6 && new URL(page.url()).origin !== origin; i++) {
		if (await page.locator('input[name=login]').count()) {
			if (mode === 'forge') {
				out.state_seen = state !== null;
				const cb = `${origin}/register/oidc/callback`;
				const forged = 'A'.repeat(43);
				const p2 = await ctx.newPage();
				const r1 = await p2.goto(`${cb}?code=forged&state=${forged}`);
				out.forged_status = r1.status();
				out.forged_msg = (await p2.textContent('.msg')).trim();
				await p2.close();
				const other = await (await browser.newContext()).newPage();
				const r2 = await other.goto(`${cb}?code=stolen&state=${state}`);
				out.other_browser_status = r2.status();
				out.other_browser_msg = (await other.textContent('.msg')).trim();
			}
			await page.fill('input[name=login]', login);
			await page.fill('input[name=password]', 'correct horse battery staple');
			await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
		} else if (await page.locator('input[name=prompt][value=consent]').count()) {
			await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
		} else {
			break;
		}
	}
	// The server's pages refresh themselves (no JavaScript) until its worker is done.
	await page.waitForSelector('.ok, .msg', { timeout: 60000 });
	out.url_path = new URL(page.url()).pathname;
	if (await page.locator('.ok').count())
		out.done = (await page.textContent('.ok')).trim();
	if (await page.locator('.msg').count())
		out.msg = (await page.textContent('.msg')).trim();
} catch (e) {
	out.error = String(e);
} finally {
	await browser.close();
}
console.log(JSON.stringify(out));
