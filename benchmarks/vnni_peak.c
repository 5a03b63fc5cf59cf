/* One core's int8 dot-product ceiling: 12 independent chains of AVX-512 VNNI vpdpbusd (64 u8×s8 multiply-adds
 * each), enough to cover the instruction's latency, so the loop runs at its throughput. Run one copy per core at
 * once to see whether the cores share the unit.
 *
 *     gcc -O2 -mavx512f -mavx512vnni -o /tmp/vnni_peak benchmarks/vnni_peak.c && /tmp/vnni_peak
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define CHAINS 12
#define INSTRUCTIONS 200000000L

int main(void) {
    __m512i acc[CHAINS];
    __m512i a = _mm512_set1_epi32(0x01010101), b = _mm512_set1_epi32(0x02020202);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_epi32(i);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long n = 0; n < INSTRUCTIONS / CHAINS; n++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
        __asm__ volatile("" : "+v"(a));  /* keeps the compiler from folding the loop away */
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) * 1e-9;
    int checksum = 0;
    for (int i = 0; i < CHAINS; i++) checksum += _mm512_reduce_add_epi32(acc[i]);
    double done = (double)(INSTRUCTIONS / CHAINS * CHAINS);
    printf("%.2f G vpdpbusd/s = %.0f G int8 multiply-adds/s (checksum %d)\n", done / seconds / 1e9,
           done * 64 / seconds / 1e9, checksum);
    return 0;
}
