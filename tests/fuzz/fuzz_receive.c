/* SPDX-License-Identifier: MIT */
/*
 * One datagram into a device with one configured peer and a live session. The
 * first byte picks how the rest becomes a datagram, so that every message type
 * gets past its cheap checks:
 *   0  the bytes as they are
 *   1  initiation / 2 response / 3 cookie reply: type set, receiver index aimed
 *      at a live index, valid mac1 (and mac2 if we hold a cookie)
 *   4  data to our live receiver index, the rest as ciphertext
 *   5  data encrypted with the peer's real key: the rest is the inner packet
 * Bit 0x80 of the first byte makes the device "under load" for this datagram.
 */
#include "fuzz_wg_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static uint8_t buf[PKT_BUF_MTU];

static size_t build(uint8_t mode, const uint8_t *data, size_t size, uint8_t *out)
{
	struct noise_keypair *kp;
	size_t len;
	struct pkt *p;

	switch (mode) {
	case 1:
	case 2:
	case 3:
		len = mode == 1 ? sizeof(struct message_handshake_initiation) :
				  mode == 2 ? sizeof(struct message_handshake_response) :
					      sizeof(struct message_handshake_cookie);
		memset(out, 0, len);
		memcpy(out, data, MIN(size, len));
		le32_write(out, mode);
		if (mode != 1) {
			uint32_t idx = us_them->handshake.entry.hashed ?
					       us_them->handshake.entry.index :
					       us_them->keypairs.current->entry.index;
			le32_write(out + (mode == 2 ? 8 : 4), idx);
		}
		if (mode != 3)
			fuzz_wg_mac(out, len);
		return len;
	case 4:
		len = MAX(size, 16 + 16) + 16;
		if (len > PKT_BUF_MTU)
			len = PKT_BUF_MTU;
		memset(out, 0, len);
		memcpy(out + 16, data, MIN(size, len - 16));
		le32_write(out, MESSAGE_DATA);
		le32_write(out + 4, us_them->keypairs.current->entry.index);
		return len;
	case 5:
		kp = them_us->keypairs.current;
		if (!kp || size > 1400 || pkt_pool_get(them.pool, &p, 1) != 1)
			return 0;
		memcpy(p->data, data, size);
		p->len = (uint32_t)size;
		p->keypair = kp;
		p->counter = kp->send_counter++;
		wg_send_encrypt(p);
		p->keypair = NULL;
		len = p->err ? 0 : p->len;
		memcpy(out, p->data, len);
		pkt_free(&p, 1);
		return len;
	default:
		len = MIN(size, PKT_BUF_MTU);
		memcpy(out, data, len);
		return len;
	}
}

static void write_seeds(const char *dir)
{
	static const uint8_t ip4[] = { 0x45, 0, 0, 24, 0, 0, 0, 0, 64, 17, 0, 0, 100, 64, 0, 2,
				       100, 64, 0, 1, 1, 2, 3, 4 };
	uint8_t seed[1 + 256];
	size_t len;

	seed[0] = 0;
	len = fuzz_wg_initiation(seed + 1);
	fuzz_wg_write_seed(dir, "raw-initiation", seed, 1 + len);
	seed[0] = 1;
	fuzz_wg_write_seed(dir, "initiation", seed, 1 + len);
	memset(seed + 1, 0, 92);
	seed[0] = 2;
	fuzz_wg_write_seed(dir, "response", seed, 1 + 92);
	seed[0] = 3;
	fuzz_wg_write_seed(dir, "cookie", seed, 1 + 64);
	seed[0] = 4;
	fuzz_wg_write_seed(dir, "data-garbage", seed, 1 + 48);
	seed[0] = 5;
	memcpy(seed + 1, ip4, sizeof(ip4));
	fuzz_wg_write_seed(dir, "data-ip4", seed, 1 + sizeof(ip4));
	fuzz_wg_write_seed(dir, "data-keepalive", seed, 1);
	seed[0] = 0x81;
	len = fuzz_wg_initiation(seed + 1);
	fuzz_wg_write_seed(dir, "initiation-under-load", seed, 1 + len);
	seed[0] = 0;
	len = build(5, ip4, sizeof(ip4), seed + 1);
	fuzz_wg_write_seed(dir, "raw-data", seed, 1 + len);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("TRELLIS_FUZZ_SEEDS");

	(void)argc;
	(void)argv;
	fuzz_wg_setup();
	if (dir) {
		write_seeds(dir);
		exit(0);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;

	if (!size)
		return 0;
	h_now += NSEC_PER_MSEC;
	len = build(data[0] & 0x7f, data + 1, size - 1, buf);
	wg_device_force_under_load(us.dev, data[0] >> 7);
	fuzz_wg_rx(buf, len);
	/* Keep a session alive for the next input: re-establish it if the input broke it. */
	if (!us_them->keypairs.current || !them_us->keypairs.current ||
	    !them_us->keypairs.current->send_valid) {
		wg_device_force_under_load(us.dev, 0);
		h_now += 10 * NSEC_PER_SEC;
		them_us->last_sent_handshake_ns = TIME_NEVER;
		h_send(&them, &us, 20, 0);
		h_pump(&us, &them);
		h_qfree(&us.tun);
		h_qfree(&them.tun);
	}
	return 0;
}
