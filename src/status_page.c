/*
 * The status page served at / (see status.h).
 */
#include "status.h"

const char status_page_html[] =
    "<!doctype html><html><head><meta charset=\"utf-8\">"
    "<title>khost</title></head><body><h1>khost</h1>"
    "<p>See <a href=\"/status.json\">/status.json</a>.</p></body></html>\n";
