/* read_bandwidth.h — how fast this machine reads memory with moec's threads: the limit a decode
 * step (which streams every active weight once) runs into. The probe is shared/bench/bw.c's:
 * 256-byte steps with 4 independent vector accumulators per thread (a plain float sum would
 * measure the adder chain, not the memory). */
#ifndef MOEC_CORE_READ_BANDWIDTH_H
#define MOEC_CORE_READ_BANDWIDTH_H

#include <stddef.h>

/* Reads the n spans (ptr[i], len[i] bytes) once with the pool's threads (core/threads.h), in
 * chunks of 1 MiB; returns GB/s (1e9 bytes per second) of that pass, 0 if there is nothing to
 * read. *sink (may be NULL) receives a checksum so the reads cannot be optimised away. */
double moec_read_bandwidth(const void *const *ptr, const size_t *len, int n, unsigned long long *sink);

#endif
