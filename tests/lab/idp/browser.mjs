// A person at the provider's login page, in Debian's Chromium (headless, driven by
// playwright-core; no browser is downloaded):
//
//   node browser.mjs URL REDIRECT-PREFIX LOGIN SPKI-HASH [STATE-FILE]
//
// Opens URL (the authorization URL the relying party made), signs in as LOGIN on the
// form, approves the consent page, and prints the query string the provider sends
// the browser back with (no relying party listens at REDIRECT-PREFIX in the lab: the
// request is seen and recorded here). The provider's certificate is accepted by its key hash
// alone (SPKI-HASH). STATE-FILE keeps the browser's cookies (the provider's session)
// between runs.
import fs from 'node:fs';

import { chromium } from 'playwright-core';

const [url, redirectPrefix, login, spki, stateFile] = process.argv.slice(2);
const browser = await chromium.launch({
	executablePath: '/usr/bin/chromium',
	args: ['--headless', '--no-sandbox', '--disable-background-networking',
		'--disable-component-update', '--disable-sync',
		`--ignore-certificate-errors-spki-list=${spki}`],
});
let code = 1;
try {
	const context = await browser.newContext(stateFile && fs.existsSync(stateFile) ?
		{ storageState: stateFile } : {});
	const page = await context.newPage();
	page.setDefaultTimeout(20000);
	// Nothing else leaves the lab (the form's stylesheet names a web font).
	await page.route((u) => !u.href.startsWith(new URL(url).origin), (r) => r.abort());
	// The provider redirects to the callback; routes do not see redirects, requests do.
	// Nothing listens there in the lab, so that last navigation fails: it is not waited for.
	let callback = null;
	page.on('request', (r) => {
		if (r.url().startsWith(redirectPrefix))
			callback = callback || r.url();
	});
	const step = async (act) => {
		try {
			await Promise.all([page.waitForNavigation(), act()]);
		} catch (e) {
			if (!callback)
				throw e;
		}
	};
	await step(() => page.goto(url).catch((e) => { if (!callback) throw e; }));
	for (let i = 0; i < 4 && !callback; i++) {
		if (await page.locator('input[name=login]').count()) {
			await page.fill('input[name=login]', login);
			await page.fill('input[name=password]', 'correct horse battery staple');
			await step(() => page.click('button[type=submit]'));
		} else if (await page.locator('input[name=prompt][value=consent]').count()) {
			await step(() => page.click('button[type=submit]'));
		} else {
			break;
		}
	}
	if (!callback) {
		console.error(`browser: no redirect to ${redirectPrefix}; page says: ` +
			(await page.textContent('body')).slice(0, 300));
	} else {
		process.stdout.write(new URL(callback).search.slice(1) + '\n');
		code = 0;
	}
	if (stateFile)
		await context.storageState({ path: stateFile });
} finally {
	await browser.close();
}
process.exit(code);
