/*
 * One consumer-group member (see member.c). Spawned and joined by the
 * pipeline; the functions are declared in pipeline.h next to the struct
 * they work on.
 */
#ifndef KHOST_MEMBER_H
#define KHOST_MEMBER_H

#include "pipeline.h"

#endif
