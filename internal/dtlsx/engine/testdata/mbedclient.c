/*
 * A DTLS 1.2 client configured like a vendor device SDK built on mbedTLS
 * without ECC, GCM or CCM: it offers exactly the PSK, RSA_PSK and RSA CBC
 * suites below (no PSK configured), verifies the server certificate
 * against a CA and the host name, sends one message and prints the reply.
 *
 * usage: mbedclient host port ca.pem servername message
 */
#include <stdio.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/timing.h>
#include <mbedtls/x509_crt.h>

static const int suites[] = {
	0x008C, 0x00AE, 0x008D, /* PSK */
	0x0094, 0x00B6, 0x0095, /* RSA_PSK */
	0x002F, 0x003C, 0x0035, 0x003D, /* RSA */
	0,
};

static int fail(const char *what, int ret) {
	char buf[200];
	mbedtls_strerror(ret, buf, sizeof buf);
	printf("%s failed: -0x%04x %s\n", what, (unsigned)-ret, buf);
	return 1;
}

int main(int argc, char **argv) {
	if (argc != 6) {
		fprintf(stderr, "usage: %s host port ca.pem servername message\n", argv[0]);
		return 2;
	}
	mbedtls_net_context net;
	mbedtls_ssl_context ssl;
	mbedtls_ssl_config conf;
	mbedtls_x509_crt ca;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_timing_delay_context timer;
	int ret;

	mbedtls_net_init(&net);
	mbedtls_ssl_init(&ssl);
	mbedtls_ssl_config_init(&conf);
	mbedtls_x509_crt_init(&ca);
	mbedtls_entropy_init(&entropy);
	mbedtls_ctr_drbg_init(&drbg);

	if ((ret = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, NULL, 0)) != 0)
		return fail("drbg", ret);
	if ((ret = mbedtls_x509_crt_parse_file(&ca, argv[3])) != 0)
		return fail("ca", ret);
	if ((ret = mbedtls_net_connect(&net, argv[1], argv[2], MBEDTLS_NET_PROTO_UDP)) != 0)
		return fail("connect", ret);
	if ((ret = mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_DATAGRAM,
					       MBEDTLS_SSL_PRESET_DEFAULT)) != 0)
		return fail("config", ret);
	mbedtls_ssl_conf_min_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	mbedtls_ssl_conf_ca_chain(&conf, &ca, NULL);
	mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
	mbedtls_ssl_conf_ciphersuites(&conf, suites);
	mbedtls_ssl_conf_read_timeout(&conf, 5000);
	mbedtls_ssl_conf_handshake_timeout(&conf, 500, 4000);
	if ((ret = mbedtls_ssl_setup(&ssl, &conf)) != 0)
		return fail("setup", ret);
	if ((ret = mbedtls_ssl_set_hostname(&ssl, argv[4])) != 0)
		return fail("hostname", ret);
	mbedtls_ssl_set_bio(&ssl, &net, mbedtls_net_send, mbedtls_net_recv, mbedtls_net_recv_timeout);
	mbedtls_ssl_set_timer_cb(&ssl, &timer, mbedtls_timing_set_delay, mbedtls_timing_get_delay);

	do {
		ret = mbedtls_ssl_handshake(&ssl);
	} while (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE);
	if (ret != 0)
		return fail("handshake", ret);
	printf("suite %s\n", mbedtls_ssl_get_ciphersuite(&ssl));

	const char *msg = argv[5];
	do {
		ret = mbedtls_ssl_write(&ssl, (const unsigned char *)msg, strlen(msg));
	} while (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE);
	if (ret < 0)
		return fail("write", ret);
	unsigned char buf[1024];
	do {
		ret = mbedtls_ssl_read(&ssl, buf, sizeof buf - 1);
	} while (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE);
	if (ret < 0)
		return fail("read", ret);
	buf[ret] = 0;
	printf("echo %s\n", buf);
	do {
		ret = mbedtls_ssl_close_notify(&ssl);
	} while (ret == MBEDTLS_ERR_SSL_WANT_WRITE);
	mbedtls_net_free(&net);
	return 0;
}
