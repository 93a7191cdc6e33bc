/* smp_remap.c with the non-shareable TLBI VAE1: stale read (exit 3) with FB=0, fresh (exit 0) with FB=1. */
#define REMAP_TLBI(x) TLBI_X(vae1, x)
#include "smp_remap.c"
