/* The tile's channel loop in AVX2 intrinsics, for several tile shapes, with every operand in L1: what
 * one core's loads, broadcasts and FMAs allow each shape, apart from the kernel's other costs.
 *
 *     gcc -O3 -march=native -o /tmp/tile_loops benchmarks/tile_loops.c && /tmp/tile_loops
 *
 * Run it alone on an idle machine, and next to a second copy of itself (two shells) for the rate a
 * core keeps while the other core works too (turbo clocks make one core alone faster).  On a Zen 1
 * core (2026-12-07; 256-bit FMAs split in two; its clock moved with the host's load, so two runs):
 * "no loads" 42 and 46 GFLOP/s, 6x16 38-40 and 45, 4x24 39-40 and 45.5, 8x8 32 and 38, 12x8 32 and
 * 38, paired 6x8 38 and 45: a tile that broadcasts once per multiply-add waits on its broadcasts
 * (76-83 % of the chains' rate, against 93-98 %), which is why AVX2's one-vector panels take two
 * channels a step (costs/packing.py, channel_group).  GFLOP/s count 2 per multiply-add of a lane.
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define STEPS 256 /* channels a tile runs over */
#define REPS 200000L

static float panel[STEPS * 32] __attribute__((aligned(64)));
static float pixels[16][STEPS] __attribute__((aligned(64)));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ROWS pixel rows x VECS vectors of 8 filters: each channel, VECS panel loads, ROWS broadcasts and
 * ROWS x VECS FMAs (the kernel's AVX2 tiles: 6x16 is ROWS 6, VECS 2; the old 8-filter tile ROWS 8, VECS 1). */
#define TILE(NAME, ROWS, VECS)                                                                   \
    __attribute__((noinline)) static void NAME(float *out) {                                    \
        for (long r = 0; r < REPS; r++) {                                                       \
            __m256 acc[ROWS * VECS];                                                            \
            for (int i = 0; i < ROWS * VECS; i++) acc[i] = _mm256_setzero_ps();                 \
            for (int c = 0; c < STEPS; c++) {                                                   \
                __m256 row[VECS];                                                               \
                for (int v = 0; v < VECS; v++) row[v] = _mm256_load_ps(panel + c * 8 * VECS + 8 * v); \
                for (int j = 0; j < ROWS; j++) {                                                \
                    __m256 x = _mm256_broadcast_ss(&pixels[j][c]);                              \
                    for (int v = 0; v < VECS; v++) acc[j * VECS + v] = _mm256_fmadd_ps(row[v], x, acc[j * VECS + v]); \
                }                                                                               \
            }                                                                                   \
            for (int i = 0; i < ROWS * VECS; i++)                                               \
                _mm256_store_ps(out + 8 * i, _mm256_add_ps(acc[i], _mm256_load_ps(out + 8 * i))); \
        }                                                                                       \
    }

TILE(tile_6x16, 6, 2)
TILE(tile_4x24, 4, 3)
TILE(tile_8x8, 8, 1)
TILE(tile_12x8, 12, 1)

/* The paired 8-filter tile: 6 rows, two vectors of 4 filters x 2 channels, one 64-bit broadcast of a
 * pair of pixel values a row, every two channels (useful multiply-adds: 6 x 8 x 2 per step). */
__attribute__((noinline)) static void tile_paired_6x8(float *out) {
    for (long r = 0; r < REPS; r++) {
        __m256 acc[12];
        for (int i = 0; i < 12; i++) acc[i] = _mm256_setzero_ps();
        for (int c = 0; c < STEPS; c += 2) {
            __m256 first = _mm256_load_ps(panel + c * 8), second = _mm256_load_ps(panel + c * 8 + 8);
            for (int j = 0; j < 6; j++) {
                __m256 x = _mm256_castpd_ps(_mm256_broadcast_sd((const double *)&pixels[j][c]));
                acc[2 * j] = _mm256_fmadd_ps(first, x, acc[2 * j]);
                acc[2 * j + 1] = _mm256_fmadd_ps(second, x, acc[2 * j + 1]);
            }
        }
        for (int i = 0; i < 12; i++) _mm256_store_ps(out + 8 * i, _mm256_add_ps(acc[i], _mm256_load_ps(out + 8 * i)));
    }
}

/* 12 independent FMA chains and no load: the core's peak. (The asm barrier keeps the compiler from
 * merging the chains.) */
__attribute__((noinline)) static void no_loads(float *out) {
    for (long r = 0; r < REPS; r++) {
        __m256 acc[12];
        for (int i = 0; i < 12; i++) acc[i] = _mm256_setzero_ps();
        __m256 a = _mm256_load_ps(panel), b = _mm256_load_ps(panel + 8), x = _mm256_broadcast_ss(&pixels[0][0]);
        for (int c = 0; c < STEPS; c++) {
            for (int j = 0; j < 6; j++) {
                acc[2 * j] = _mm256_fmadd_ps(a, x, acc[2 * j]);
                acc[2 * j + 1] = _mm256_fmadd_ps(b, x, acc[2 * j + 1]);
            }
            __asm__ volatile("" : "+x"(acc[0]), "+x"(acc[1]), "+x"(acc[2]), "+x"(acc[3]), "+x"(acc[4]), "+x"(acc[5]),
                             "+x"(acc[6]), "+x"(acc[7]), "+x"(acc[8]), "+x"(acc[9]), "+x"(acc[10]), "+x"(acc[11]));
        }
        for (int i = 0; i < 12; i++) _mm256_store_ps(out + 8 * i, _mm256_add_ps(acc[i], _mm256_load_ps(out + 8 * i)));
    }
}

int main(void) {
    float *out = aligned_alloc(64, 16 * 8 * sizeof(float) * 2);
    for (int i = 0; i < 16 * 8 * 2; i++) out[i] = 0;
    for (int i = 0; i < STEPS * 32; i++) panel[i] = 1e-3f;
    for (int j = 0; j < 16; j++)
        for (int c = 0; c < STEPS; c++) pixels[j][c] = 1e-3f;
    struct {
        const char *name;
        void (*run)(float *);
        int fmas_per_step; /* 8-lane multiply-adds per channel */
    } loops[] = {
        {"no loads (12 chains)", no_loads, 12},
        {"6x16: 2 loads, 6 broadcasts, 12 FMA", tile_6x16, 12},
        {"4x24: 3 loads, 4 broadcasts, 12 FMA", tile_4x24, 12},
        {"8x8: 1 load, 8 broadcasts, 8 FMA", tile_8x8, 8},
        {"12x8: 1 load, 12 broadcasts, 12 FMA", tile_12x8, 12},
        {"paired 6x8: 2 loads, 6 pair broadcasts, 12 FMA a 2 channels", tile_paired_6x8, 6},
    };
    for (int round = 0; round < 3; round++) {
        for (unsigned k = 0; k < sizeof loops / sizeof loops[0]; k++) {
            double start = now();
            loops[k].run(out);
            double seconds = now() - start;
            printf("%-62s %5.1f GFLOP/s\n", loops[k].name, 2.0 * 8 * loops[k].fmas_per_step * STEPS * REPS / seconds / 1e9);
        }
        printf("\n");
    }
    return out[0] > 1e30f; /* (keeps the results alive) */
}
