/* SPDX-License-Identifier: MIT */
/*
 * The handshake consumers driven directly, past mac1. The first byte picks:
 *   0  wg_noise_handshake_consume_initiation on the rest
 *   1  wg_noise_handshake_consume_response on the rest, aimed at a pending initiation
 *   2  wg_cookie_message_consume on the rest, as an answer to a message we sent
 *   3  a real initiation from the peer XOR the rest, macs recomputed, through wg_device_rx
 *   4  a real response to our initiation XOR the rest, macs recomputed, through wg_device_rx
 * so the fuzzer explores both garbage and nearly valid messages.
 */
#include "fuzz_wg_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static void xor_into(uint8_t *msg, size_t len, const uint8_t *data, size_t size)
{
	size_t i;

	/* Leave the macs alone: they are recomputed. */
	for (i = 0; i < size && i < len - sizeof(struct message_macs); i++)
		msg[i] ^= data[i];
}

/* us starts a handshake with them; returns its initiation (for them to answer). */
static bool us_initiate(struct message_handshake_initiation *init)
{
	us.dev->now_ns = h_now;
	return wg_noise_handshake_create_initiation(us.dev, &us_them->handshake, init,
						    H_WALL_BASE + h_now) == 0;
}

static void one(uint8_t mode, const uint8_t *data, size_t size)
{
	uint8_t msg[sizeof(struct message_handshake_initiation)] = { 0 };
	struct message_handshake_initiation init;
	struct message_handshake_response *resp = (void *)msg;
	struct message_handshake_cookie *ck = (void *)msg;
	int reason;

	us.dev->now_ns = h_now;
	switch (mode % 5) {
	case 0:
		memcpy(msg, data, MIN(size, sizeof(init)));
		wg_noise_handshake_consume_initiation(us.dev, (void *)msg, h_now, &reason);
		break;
	case 1:
		if (!us_initiate(&init))
			break;
		memcpy(msg, data, MIN(size, sizeof(*resp)));
		le32_write(&resp->receiver_index, le32_read(&init.sender_index));
		if (wg_noise_handshake_consume_response(us.dev, resp))
			wg_noise_handshake_begin_session(us.dev, &us_them->handshake,
							 &us_them->keypairs, h_now);
		break;
	case 2:
		memcpy(msg, data, MIN(size, sizeof(*ck)));
		us_them->cookie.have_sent_mac1 = true;
		wg_cookie_message_consume(&us_them->cookie, ck, h_now);
		break;
	case 3:
		fuzz_wg_initiation(msg);
		xor_into(msg, sizeof(init), data, size);
		fuzz_wg_mac(msg, sizeof(init));
		fuzz_wg_rx(msg, sizeof(init));
		break;
	case 4:
		if (!us_initiate(&init))
			break;
		them.dev->now_ns = h_now;
		if (!wg_noise_handshake_consume_initiation(them.dev, &init, h_now, &reason) ||
		    wg_noise_handshake_create_response(them.dev, &them_us->handshake, resp) < 0)
			break;
		xor_into(msg, sizeof(*resp), data, size);
		fuzz_wg_mac(msg, sizeof(*resp));
		fuzz_wg_rx(msg, sizeof(*resp));
		/* them's side is left half done; clear it for the next input. */
		wg_noise_handshake_clear(them.dev, &them_us->handshake);
		break;
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("TRELLIS_FUZZ_SEEDS");
	uint8_t seed[1 + 148];

	(void)argc;
	(void)argv;
	fuzz_wg_setup();
	if (dir) {
		seed[0] = 0;
		fuzz_wg_initiation(seed + 1);
		fuzz_wg_write_seed(dir, "initiation", seed, sizeof(seed));
		memset(seed + 1, 0, 148);
		seed[0] = 1;
		fuzz_wg_write_seed(dir, "response", seed, 1 + 92);
		seed[0] = 2;
		fuzz_wg_write_seed(dir, "cookie", seed, 1 + 64);
		seed[0] = 3;
		fuzz_wg_write_seed(dir, "initiation-intact", seed, 1);
		seed[9] = 0x01;
		fuzz_wg_write_seed(dir, "initiation-flip", seed, 1 + 148);
		seed[0] = 4;
		fuzz_wg_write_seed(dir, "response-intact", seed, 1);
		fuzz_wg_write_seed(dir, "response-flip", seed, 1 + 92);
		exit(0);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	/* Past the per-peer initiation flood guard every time. */
	h_now += NSEC_PER_SEC / 10;
	one(data[0], data + 1, size - 1);
	h_qfree(&us.udp);
	h_qfree(&us.tun);
	h_qfree(&them.udp);
	return 0;
}
