/*
 * The monitor's systemd notifications: a host on the mock cluster with
 * NOTIFY_SOCKET pointing at a datagram socket this test owns (as systemd
 * does for a Type=notify service) and the watchdog asked for. Skipped
 * when khost is built without libsystemd (./configure --without-systemd).
 */
#include <check.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "httputil.h"
#include "mockutil.h"
#include "testutil.h"

#ifdef HAVE_SYSTEMD
/* A datagram socket at dir/notify, as NOTIFY_SOCKET. */
static int notify_socket(const char *dir) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", dir);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  setenv("NOTIFY_SOCKET", sa.sun_path, 1);
  return fd;
}

/* Wait up to ms for a datagram that holds want; returns 1 when it came.
 * Every datagram read is appended to seen ("|" between them). */
static int wait_for(int fd, const char *want, int64_t ms, GString *seen) {
  int64_t deadline = tu_mono_ms() + ms;
  char buf[512];
  while (tu_mono_ms() < deadline) {
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100 * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
      continue;
    buf[n] = '\0';
    g_string_append_printf(seen, "%s|", buf);
    if (strstr(buf, want))
      return 1;
  }
  return 0;
}

/* Forget the datagrams received so far. */
static void drain(int fd) {
  char buf[512];
  while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
    ;
}

/* NOTIFY_SOCKET at a socket in dir, and the watchdog asked for every
 * usec, for this process. */
static int notify_env(const char *dir, const char *usec) {
  char pid[32];
  snprintf(pid, sizeof(pid), "%d", (int)getpid());
  setenv("WATCHDOG_USEC", usec, 1);
  setenv("WATCHDOG_PID", pid, 1);
  return notify_socket(dir);
}

static void notify_env_clear(int fd) {
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  close(fd);
}

/* READY=1 comes once the member has joined (not before: the mock takes
 * 3 s for the first join), then WATCHDOG=1 at half the interval, and
 * STOPPING=1 when the host is asked to stop. */
START_TEST(test_ready_watchdog_stopping) {
  mu_cluster_t c;
  mu_host_t h;
  GString *seen = g_string_new(NULL);
  mu_start(&c, 1);
  mu_topic(&c, HU_TOPIC, 3);
  int fd = notify_env(c.dir, "1000000");
  char *cfg = hu_write_cfg(&c, "127.0.0.1:0", NULL, NULL, NULL);
  mu_host_start(&h, cfg, 0);
  int port = host_http_port(h.host), status;
  ck_assert_msg(wait_for(fd, "READY=1", 30000, seen), "no READY=1: %s",
                seen->str);
  /* Ready for systemd means ready for /readyz as well. */
  char *body = hu_get(port, "/readyz", &status);
  ck_assert_int_eq(status, 200);
  free(body);
  for (int i = 0; i < 2; i++)
    ck_assert_msg(wait_for(fd, "WATCHDOG=1", 3000, seen),
                  "no WATCHDOG=1 within 3 s: %s", seen->str);
  mu_host_stop(&h);
  ck_assert_msg(wait_for(fd, "STOPPING=1", 5000, seen), "no STOPPING=1: %s",
                seen->str);
  mu_host_close(&h);
  notify_env_clear(fd);
  g_string_free(seen, TRUE);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A plugin call that does not return for longer than handler_timeout: the
 * member's loop stands still, /readyz says so, and WATCHDOG=1 is withheld
 * (systemd would restart the host) until the call returns. */
START_TEST(test_watchdog_withheld_while_stuck) {
  mu_cluster_t c;
  mu_host_t h;
  GString *seen = g_string_new(NULL);
  pipeline_stats_t s;
  int status;
  mu_start(&c, 1);
  mu_topic(&c, HU_TOPIC, 1);
  mu_produce(&c, HU_TOPIC, 0, "evt-1", NULL, "order");
  mu_flush(&c);
  int fd = notify_env(c.dir, "400000");
  char *cfg = hu_write_cfg(&c, "127.0.0.1:0", NULL, "handler_timeout = \"1s\";",
                           "slow_ms = 8000;");
  mu_host_start(&h, cfg, 0);
  int port = host_http_port(h.host);
  ck_assert_msg(wait_for(fd, "READY=1", 30000, seen), "no READY=1: %s",
                seen->str);
  char *body = NULL;
  TU_WAIT_UNTIL((free(body), body = hu_get(port, "/readyz", &status),
                 strstr(body, "member 0 is stuck")),
                15000, "/readyz reports the member stuck");
  free(body);
  /* Still inside the 8 s call: no keep-alive for a whole second (after
   * those sent before the member counted as stuck). */
  drain(fd);
  g_string_truncate(seen, 0);
  ck_assert_int_eq(wait_for(fd, "WATCHDOG=1", 1000, seen), 0);
  mu_host_stats(&h, &s);
  ck_assert_uint_eq(s.handled, 0);
  /* The call returns: the keep-alive comes back. */
  TU_WAIT_UNTIL((mu_host_stats(&h, &s), s.handled == 1), 20000,
                "the slow call returns");
  ck_assert_msg(wait_for(fd, "WATCHDOG=1", 3000, seen),
                "no WATCHDOG=1 after the call returned: %s", seen->str);
  mu_host_stop(&h);
  mu_host_close(&h);
  notify_env_clear(fd);
  g_string_free(seen, TRUE);
  free(cfg);
  mu_stop(&c);
}
END_TEST
#endif

Suite *monitor_suite(void) {
  Suite *s = suite_create("monitor");
  TCase *tc = tcase_create("systemd");
  tcase_set_timeout(tc, 120);
#ifdef HAVE_SYSTEMD
  tcase_add_test(tc, test_ready_watchdog_stopping);
  tcase_add_test(tc, test_watchdog_withheld_while_stuck);
#else
  fprintf(stderr, "check_monitor: built without libsystemd: nothing to "
                  "notify\n");
#endif
  suite_add_tcase(s, tc);
  return s;
}
