/*
 * log: writes one line per record through khost's logger. A debugging aid,
 * and the smallest complete example of a khost plugin.
 *
 *   config = {
 *     level = "info";    # err, warning, notice, info (default) or debug
 *     max_value = 200;   # bytes of the value (and key) shown, default 200
 *   };
 *
 * A line looks like
 *   orders[2]@1041 event_id="e-1" key="k1" value="{\"id\":7}" (8 bytes)
 * Control bytes and bytes that are not UTF-8 are shown as \xNN; a null key,
 * value or event ID as null; a cut value ends in `...` before its length.
 *
 * Concurrency & locking: each instance is created, used and destroyed on its
 * member's thread and owns its buffers; instances share nothing, so there
 * are no locks. The host's logger writes each line with a single write().
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <khost/plugin.h>

#define LP_MAX_VALUE_LIMIT 65536

typedef struct lp {
  const khost_api_t *api;
  khost_host_t *host;
  int level;
  size_t max;           /* bytes of key/value/event ID shown */
  char *key, *val, *id; /* escape buffers, each lp_bufsize(max) bytes */
} lp_t;

static const struct {
  const char *name;
  int level;
} lp_levels[] = {
    {"err", KHOST_LOG_ERR},       {"warning", KHOST_LOG_WARNING},
    {"notice", KHOST_LOG_NOTICE}, {"info", KHOST_LOG_INFO},
    {"debug", KHOST_LOG_DEBUG},
};

/* Room for max bytes escaped as \xNN, the quotes, "..." and a length. */
static size_t lp_bufsize(size_t max) {
  return 4 * max + 64;
}

/* Length of the valid UTF-8 sequence starting at p (n bytes left), 0 when
 * there is none: overlong forms and surrogates do not count. */
static size_t lp_utf8_len(const unsigned char *p, size_t n) {
  size_t len;
  uint32_t cp, min;
  if (p[0] >= 0xc2 && p[0] <= 0xdf)
    len = 2, cp = p[0] & 0x1f, min = 0x80;
  else if ((p[0] & 0xf0) == 0xe0)
    len = 3, cp = p[0] & 0x0f, min = 0x800;
  else if (p[0] >= 0xf0 && p[0] <= 0xf4)
    len = 4, cp = p[0] & 0x07, min = 0x10000;
  else
    return 0;
  if (len > n)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

/* Escape n bytes of p into out (at least 4 * n + 1 bytes); returns the
 * length written. */
static size_t lp_escape(char *out, const unsigned char *p, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    size_t u = p[i] >= 0x80 ? lp_utf8_len(p + i, n - i) : 0;
    if (u) {
      memcpy(out + o, p + i, u);
      o += u, i += u;
    } else if (p[i] == '"' || p[i] == '\\') {
      out[o++] = '\\', out[o++] = (char)p[i++];
    } else if (p[i] < 0x20 || p[i] >= 0x7f) {
      o += (size_t)sprintf(out + o, "\\x%02x", p[i++]);
    } else {
      out[o++] = (char)p[i++];
    }
  }
  out[o] = '\0';
  return o;
}

/* `"text"`, `"text..."`, or `null`; with_len appends ` (N bytes)`. */
static const char *lp_quote(char *buf, size_t max, const void *data, size_t len,
                            int with_len) {
  if (!data)
    return "null";
  size_t shown = len < max ? len : max;
  size_t o = 0;
  buf[o++] = '"';
  o += lp_escape(buf + o, data, shown);
  o += (size_t)sprintf(buf + o, "%s\"", shown < len ? "..." : "");
  if (with_len || shown < len)
    sprintf(buf + o, " (%zu bytes)", len);
  return buf;
}

static int lp_settings(const khost_api_t *api, khost_host_t *host, lp_t *lp,
                       char *err, size_t errlen) {
  const char *level = "info";
  int64_t max = 200;
  if (api->config_string(host, "level", &level) < 0 ||
      api->config_int(host, "max_value", &max) < 0) {
    snprintf(err, errlen, "level must be a string, max_value an integer");
    return -1;
  }
  lp->level = -1;
  for (size_t i = 0; i < sizeof(lp_levels) / sizeof(*lp_levels); i++)
    if (strcmp(level, lp_levels[i].name) == 0)
      lp->level = lp_levels[i].level;
  if (lp->level < 0) {
    snprintf(err, errlen,
             "level \"%s\" is not one of err, warning, notice, info, debug",
             level);
    return -1;
  }
  if (max < 0 || max > LP_MAX_VALUE_LIMIT) {
    snprintf(err, errlen,
             "max_value must be between 0 and %d (got %" PRId64 ")",
             LP_MAX_VALUE_LIMIT, max);
    return -1;
  }
  lp->max = (size_t)max;
  return 0;
}

static void lp_destroy(void *instance) {
  lp_t *lp = instance;
  if (!lp)
    return;
  free(lp->key);
  free(lp->val);
  free(lp->id);
  free(lp);
}

static int lp_create(const khost_api_t *api, khost_host_t *host,
                     void **instance, char *err, size_t errlen) {
  int rc = -1;
  lp_t *lp = calloc(1, sizeof(*lp));
  if (!lp) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  lp->api = api;
  lp->host = host;
  if (lp_settings(api, host, lp, err, errlen) < 0)
    goto out;
  lp->key = malloc(lp_bufsize(lp->max));
  lp->val = malloc(lp_bufsize(lp->max));
  lp->id = malloc(lp_bufsize(lp->max));
  if (!lp->key || !lp->val || !lp->id) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  *instance = lp;
  lp = NULL;
  rc = 0;
out:
  lp_destroy(lp);
  return rc;
}

static khost_result_t lp_handle(void *instance, const khost_record_t *rec) {
  lp_t *lp = instance;
  char extra[48] = "";
  if (rec->attempt > 1 || (rec->flags & KHOST_RECORD_REPLAY))
    snprintf(extra, sizeof(extra), " attempt=%" PRIu32 "%s", rec->attempt,
             rec->flags & KHOST_RECORD_REPLAY ? " replay" : "");
  lp->api->log(lp->host, lp->level,
               "%s[%" PRId32 "]@%" PRId64 " event_id=%s key=%s value=%s%s",
               rec->topic, rec->partition, rec->offset,
               lp_quote(lp->id, lp->max, rec->event_id, rec->event_id_len, 0),
               lp_quote(lp->key, lp->max, rec->key, rec->key_len, 0),
               lp_quote(lp->val, lp->max, rec->value, rec->value_len, 1),
               extra);
  return KHOST_OK;
}

static const khost_setting_t lp_settings_decl[] = {
    {"level", KHOST_SETTING_STRING, "info",
     "level of the lines: err, warning, notice, info or debug", 0},
    {"max_value", KHOST_SETTING_INT, "200",
     "bytes of the key and the value shown (0 to 65536)", 0},
    {NULL, 0, NULL, NULL, 0},
};

static const khost_plugin_t lp_plugin = {
    KHOST_PLUGIN_INIT,
    .name = "log",
    .version = "1.0",
    .create = lp_create,
    .handle = lp_handle,
    .destroy = lp_destroy,
    .settings = lp_settings_decl,
};

const khost_plugin_t *khost_plugin_entry(void) {
  return &lp_plugin;
}
