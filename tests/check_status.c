/*
 * The status page against a host on the mock cluster: /status.json, and
 * the page itself rendered by headless Chromium, asserting on the DOM its
 * script built from /status.json.
 *
 * Chromium (Debian chromium) is needed for the page test: without it the
 * test is skipped with a note, unless KHOST_REQUIRE_CHROMIUM=1 (CI), which
 * makes its absence a failure. KHOST_STATUS_SCREENSHOT=FILE also saves a
 * screenshot of the page there (README's docs/status-page.png).
 */
#include <check.h>
#include <glib.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "httputil.h"
#include "mockutil.h"
#include "status.h"
#include "testutil.h"

#define CHROMIUM "/usr/bin/chromium"

/* 300 records over 3 partitions, the last 3 of them failing, and a host
 * that has handled them all; returns the port of its listener. */
static int run_known_host(mu_cluster_t *c, mu_host_t *h, char **cfg) {
  char id[32];
  mu_start(c, 1);
  mu_topic(c, HU_TOPIC, 3);
  for (int i = 0; i < 300; i++) {
    snprintf(id, sizeof(id), "evt-%04d", i);
    mu_produce(c, HU_TOPIC, i % 3, id, NULL,
               i >= 297 ? "fail: no such customer" : "order");
  }
  mu_flush(c);
  *cfg = hu_write_cfg(c, "127.0.0.1:0", NULL, "members = 2;", NULL);
  mu_host_start(h, *cfg, 0);
  int port = host_http_port(h->host), status;
  char *body = NULL;
  TU_WAIT_UNTIL(
      (free(body), body = hu_get(port, "/metrics", &status),
       body && hu_sum(body, "khost_partition_committed_offset") == 300),
      60000, "every record committed");
  free(body);
  return port;
}

/* Run argv (NULL-terminated) with its stdout into a string; fails the test
 * unless it exits 0. */
static char *run_capture(char **argv) {
  char *out = NULL, *err = NULL;
  int status = 0;
  GError *e = NULL;
  ck_assert_msg(g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                             &out, &err, &status, &e),
                "cannot run %s: %s", argv[0], e ? e->message : "?");
  ck_assert_msg(g_spawn_check_wait_status(status, NULL), "%s failed: %s",
                argv[0], err);
  g_free(err);
  return out;
}

/* Headless Chromium on url with the page's script given time to fetch
 * /status.json; extra is --dump-dom or --screenshot=FILE. */
static char *chromium(const char *url, const char *extra, const char *dir) {
  char *profile = g_strdup_printf("%s/chromium-XXXXXX", dir);
  ck_assert_ptr_nonnull(g_mkdtemp(profile));
  char *user_data = g_strdup_printf("--user-data-dir=%s", profile);
  char *argv[] = {"timeout",
                  "120",
                  CHROMIUM,
                  "--headless",
                  "--no-sandbox",
                  "--disable-gpu",
                  "--disable-quic",
                  "--no-first-run",
                  "--disable-background-networking",
                  "--disable-component-update",
                  "--disable-sync",
                  "--disable-dev-shm-usage",
                  "--window-size=1000,780",
                  "--virtual-time-budget=5000",
                  user_data,
                  (char *)extra,
                  (char *)url,
                  NULL};
  char *out = run_capture(argv);
  g_free(user_data);
  g_free(profile);
  return out;
}

/* Points of the pipeline's throughput chart in /status.json. */
static size_t throughput_points(int port) {
  int status;
  char *body = hu_get(port, "/status.json", &status);
  json_t *j = body ? json_loads(body, 0, NULL) : NULL;
  json_t *p = json_array_get(json_object_get(j, "pipelines"), 0);
  size_t n = json_array_size(json_object_get(p, "throughput"));
  json_decref(j);
  free(body);
  return n;
}

static int have_chromium(void) {
  if (access(CHROMIUM, X_OK) == 0)
    return 1;
  const char *req = getenv("KHOST_REQUIRE_CHROMIUM");
  ck_assert_msg(!req || strcmp(req, "1") != 0,
                CHROMIUM " not found and KHOST_REQUIRE_CHROMIUM=1");
  fprintf(stderr, "check_status: " CHROMIUM " not found: page not tested\n");
  return 0;
}

/* /status.json of the known run: the pipeline, its members, the three
 * partitions committed to their end, the failures newest first. */
START_TEST(test_status_json) {
  mu_cluster_t c;
  mu_host_t h;
  char *cfg;
  int status;
  int port = run_known_host(&c, &h, &cfg);
  char *body = hu_get(port, "/status.json", &status);
  ck_assert_int_eq(status, 200);
  json_error_t je;
  json_t *j = json_loads(body, 0, &je);
  ck_assert_msg(j != NULL, "not JSON: %s", body);
  json_t *p = json_array_get(json_object_get(j, "pipelines"), 0);
  ck_assert_str_eq(json_string_value(json_object_get(p, "name")), "orders");
  ck_assert_int_eq(json_array_size(json_object_get(p, "members")), 2);
  json_t *counts = json_object_get(p, "counts");
  ck_assert_int_eq(json_integer_value(json_object_get(counts, "handled")), 297);
  ck_assert_int_eq(json_integer_value(json_object_get(counts, "failed")), 3);
  json_t *parts = json_object_get(p, "partitions");
  ck_assert_int_eq(json_array_size(parts), 3);
  for (size_t i = 0; i < 3; i++) {
    json_t *pt = json_array_get(parts, i);
    ck_assert_int_eq(json_integer_value(json_object_get(pt, "partition")),
                     (json_int_t)i);
    ck_assert_int_eq(json_integer_value(json_object_get(pt, "committed")), 100);
    ck_assert_int_eq(json_integer_value(json_object_get(pt, "lag")), 0);
  }
  json_t *failures = json_object_get(p, "failures");
  ck_assert_int_eq(json_array_size(failures), 3);
  ck_assert_str_eq(
      json_string_value(json_object_get(json_array_get(failures, 0), "reason")),
      "the plugin failed the record: no such customer");
  json_decref(j);
  free(body);
  mu_host_stop(&h);
  mu_host_close(&h);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* The page loads nothing from elsewhere (it must work offline): no src,
 * href, @import or url() in it, and the only URL is the SVG namespace. */
START_TEST(test_page_self_contained) {
  static const char *const fetches[] = {"src=", "href=", "@import", "url("};
  for (size_t i = 0; i < G_N_ELEMENTS(fetches); i++)
    ck_assert_msg(strstr(status_page_html, fetches[i]) == NULL,
                  "the page fetches something: %s", fetches[i]);
  const char *at = status_page_html;
  size_t urls = 0;
  while ((at = strstr(at, "http")) != NULL) {
    ck_assert_msg(strncmp(at, "http://www.w3.org/2000/svg", 26) == 0,
                  "a URL in the page: %.40s", at);
    urls++;
    at++;
  }
  ck_assert_uint_eq(urls, 1);
}
END_TEST

/* The page in Chromium: the script filled in the pipeline, a row per
 * partition with its committed offset, and the failures. */
START_TEST(test_page_in_chromium) {
  mu_cluster_t c;
  mu_host_t h;
  char *cfg;
  if (!have_chromium())
    return;
  int port = run_known_host(&c, &h, &cfg);
  char *url = g_strdup_printf("http://127.0.0.1:%d/", port);
  char *dom = chromium(url, "--dump-dom", c.dir);
  ck_assert_msg(strstr(dom, "<section class=\"pipeline\" "
                            "data-pipeline=\"orders\">"),
                "no pipeline section in the page: %s", dom);
  ck_assert_ptr_nonnull(strstr(dom, "<b class=\"handled\">297</b>"));
  for (int p = 0; p < 3; p++) {
    char row[256];
    snprintf(row, sizeof(row),
             "<tr class=\"partition\" data-topic=\"" HU_TOPIC
             "\" data-partition=\"%d\"><td>" HU_TOPIC "</td><td>%d</td>",
             p, p);
    const char *at = strstr(dom, row);
    ck_assert_msg(at != NULL, "no row for partition %d: %s", p, dom);
    ck_assert_msg(strstr(at, "<td>100</td><td>100</td><td class=\"lag\">0"),
                  "partition %d: not committed to its end of 100: %s", p, at);
  }
  ck_assert_ptr_nonnull(strstr(dom, "the plugin failed the record"));
  const char *shot = getenv("KHOST_STATUS_SCREENSHOT");
  if (shot && shot[0]) {
    /* Some throughput samples first (one every 5 s), for the chart. */
    TU_WAIT_UNTIL(throughput_points(port) >= 3, 30000,
                  "three throughput points");
    char *arg = g_strdup_printf("--screenshot=%s", shot);
    g_free(chromium(url, arg, c.dir));
    g_free(arg);
    ck_assert_msg(access(shot, R_OK) == 0, "no screenshot at %s", shot);
  }
  g_free(dom);
  g_free(url);
  mu_host_stop(&h);
  mu_host_close(&h);
  free(cfg);
  mu_stop(&c);
}
END_TEST

Suite *status_suite(void) {
  Suite *s = suite_create("status");
  TCase *tc = tcase_create("json");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_status_json);
  suite_add_tcase(s, tc);
  tc = tcase_create("page");
  tcase_set_timeout(tc, 240);
  tcase_add_test(tc, test_page_self_contained);
  tcase_add_test(tc, test_page_in_chromium);
  suite_add_tcase(s, tc);
  return s;
}
