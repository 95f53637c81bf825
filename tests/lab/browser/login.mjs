// A person at a browser, for tests/lab/test_login.sh: Debian's Chromium, headless, driven
// by playwright-core (no browser download), with JavaScript off. Prints one JSON object of
// what it saw.
//
//   node login.mjs enrol URL EMAIL PASSWORD
//     opens the login URL, checks the page names the machine, posts a form without its
//     CSRF token, signs in with a wrong password and with an unknown address, then right;
//     enrols TOTP from the page's secret (codes from oathtool) and reads the recovery codes.
//   node login.mjs pair URL URL2 EMAIL PASSWORD SECRET RECOVERY_CODE
//     signs in at both URLs (two browsers) up to the second factor; the first takes the
//     next step's code, the second is offered the same code at once (a replay, inside its
//     window whatever the machine's load), then signs in with a recovery code.
//   node login.mjs signin URL EMAIL PASSWORD [CODE [FIRST_CODE]]
//     signs in: with CODE (a recovery code, or totp:SECRET: the current code of SECRET,
//     taken when the form is filled: a code taken before the browser starts can be two
//     steps old by then on a loaded machine) when the account has a second factor, else
//     enrols one (codes from oathtool); reports the last page's title, its message or
//     result, and the recovery codes if it showed any. FIRST_CODE is typed first: what the
//     page says to it (first_message) and the code field's label (code_label) are reported.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';

const [mode, url, ...rest] = process.argv.slice(2);
// The pages work without JavaScript (issue 11): every browser here has it off.
const NO_JS = { javaScriptEnabled: false };
const [email, password] = mode === 'pair' ? rest.slice(1, 3) : rest;
const [url2, , , secret, recovery] = rest;
const out = {};

function totp(b32, offset) {
	const args = ['--totp', '-b', b32];
	if (offset)
		args.push('-N', `now + ${offset} seconds`);
	return execFileSync('oathtool', args, { encoding: 'utf8' }).trim();
}

async function signIn(page, mail, pw) {
	await page.fill('#email', mail);
	await page.fill('#password', pw);
	await page.click('button[type=submit]');
	// The answer refreshes itself (no JavaScript) until the password check is done.
	await page.waitForSelector('#secret, #code, .msg', { timeout: 60000 });
}

const browser = await chromium.launch({
	executablePath: '/usr/bin/chromium',
	args: ['--headless', '--no-sandbox', '--disable-background-networking',
	       '--disable-component-update', '--disable-sync'],
});
try {
	const ctx = await browser.newContext(NO_JS);
	const page = await ctx.newPage();
	const first = await page.goto(url);
	out.status = first.status();
	out.machine = await page.textContent('.machine');
	const cookies = await ctx.cookies();
	out.cookie = cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite,
					   secure: c.secure }));
	if (mode === 'enrol') {
		// A form posted without its CSRF token (the session cookie is sent): refused.
		const forged = await page.request.post(`${url}/login`, {
			form: { email, password },
		});
		out.csrf_less_status = forged.status();
		await signIn(page, email, password + 'x');
		out.wrong_password = (await page.textContent('.msg')).trim();
		await signIn(page, 'nobody-' + email, password);
		out.unknown_user = (await page.textContent('.msg')).trim();
		await signIn(page, email, password);
		out.secret = (await page.textContent('#secret')).trim();
		out.qr = (await page.locator('svg[aria-label="QR code"]').count()) === 1;
		out.code = totp(out.secret);
		await page.fill('#code', out.code);
		await page.click('button[type=submit]');
		await page.waitForSelector('#recovery', { timeout: 30000 });
		out.done = (await page.textContent('.ok')).trim();
		out.recovery = (await page.textContent('#recovery')).trim().split('\n');
	} else if (mode === 'pair') {
		const page2 = await (await browser.newContext(NO_JS)).newPage();
		await page2.goto(url2);
		await signIn(page, email, password);
		await signIn(page2, email, password);
		const code = totp(secret, 30);
		await page.fill('#code', code);
		await page.click('button[type=submit]');
		await page.waitForSelector('.ok', { timeout: 30000 });
		out.done = (await page.textContent('.ok')).trim();
		await page2.fill('#code', code);
		await page2.click('button[type=submit]');
		await page2.waitForSelector('.msg', { timeout: 30000 });
		out.replay = (await page2.textContent('.msg')).trim();
		await page2.fill('#code', recovery);
		await page2.click('button[type=submit]');
		await page2.waitForSelector('.ok', { timeout: 30000 });
		out.done2 = (await page2.textContent('.ok')).trim();
	} else if (mode === 'signin') {
		await signIn(page, email, password);
		if (await page.locator('#secret').count()) {
			out.secret = (await page.textContent('#secret')).trim();
			await page.fill('#code', totp(out.secret));
		} else {
			out.code_label = (await page.textContent('label[for=code]')).trim();
			if (rest[3]) {
				await page.fill('#code', rest[3]);
				await Promise.all([page.waitForNavigation(),
						   page.click('button[type=submit]')]);
				if (await page.locator('.msg').count())
					out.first_message = (await page.textContent('.msg')).trim();
			}
			await page.fill('#code', rest[2].startsWith('totp:') ? totp(rest[2].slice(5))
									: rest[2]);
		}
		const [answer] = await Promise.all([page.waitForNavigation(),
						    page.click('button[type=submit]')]);
		out.answer_status = answer ? answer.status() : null;
		out.title = (await page.textContent('h1')).trim();
		for (const [k, sel] of [['done', '.ok'], ['message', '.msg']])
			if (await page.locator(sel).count())
				out[k] = (await page.textContent(sel)).trim();
		if (await page.locator('#recovery').count())
			out.recovery = (await page.textContent('#recovery')).trim().split('\n');
	}
	if (mode !== 'signin') {
		// The URL again, in another browser: it worked once.
		const other = await browser.newContext(NO_JS);
		const again = await (await other.newPage()).goto(url);
		out.reuse_status = again.status();
	}
} catch (e) {
	out.error = String(e);
} finally {
	await browser.close();
}
console.log(JSON.stringify(out));
