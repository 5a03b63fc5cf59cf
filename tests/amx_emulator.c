// The AMX-INT8 instructions qcompile's AMX kernels use, as C functions with their semantics (Intel SDM vol. 2,
// "TILELOADD", "TDPBUSD"): tests build the kernels with `amx.register(..., emulate=True)`, which calls these
// instead of the instructions, to check the tiles' addresses, strides and configuration on CPUs without AMX.
// State is per thread, as the tile registers are.
#include <stdint.h>
#include <string.h>

static __thread uint8_t tiles[8][16][64];
static __thread uint16_t colsb[8];
static __thread uint8_t rows[8];

int32_t qcompile_amx_ldtilecfg(const uint8_t* config) {
  if (config[0] != 1) return -1;  // palette 1 is the only one
  for (int t = 0; t < 8; ++t) {
    memcpy(&colsb[t], config + 16 + 2 * t, 2);
    rows[t] = config[48 + t];
  }
  memset(tiles, 0, sizeof(tiles));
  return 0;
}

int32_t qcompile_amx_tilezero(int32_t t) {
  memset(tiles[t], 0, sizeof(tiles[t]));
  return 0;
}

int32_t qcompile_amx_tileloadd64(int32_t t, const uint8_t* base, int64_t stride) {
  memset(tiles[t], 0, sizeof(tiles[t]));
  for (int r = 0; r < rows[t]; ++r) memcpy(tiles[t][r], base + r * stride, colsb[t]);
  return 0;
}

int32_t qcompile_amx_tilestored64(int32_t t, uint8_t* base, int64_t stride) {
  for (int r = 0; r < rows[t]; ++r) memcpy(base + r * stride, tiles[t][r], colsb[t]);
  return 0;
}

// dst[m][n] += sum over k < colsb(a)/4, i < 4 of u8 a[m][4k+i] * s8 b[k][4n+i]
int32_t qcompile_amx_tdpbusd(int32_t dst, int32_t a, int32_t b) {
  for (int m = 0; m < rows[dst]; ++m) {
    for (int n = 0; n < colsb[dst] / 4; ++n) {
      int32_t sum;
      memcpy(&sum, &tiles[dst][m][4 * n], 4);
      for (int k = 0; k < colsb[a] / 4; ++k)
        for (int i = 0; i < 4; ++i)
          sum += (int32_t)tiles[a][m][4 * k + i] * (int32_t)(int8_t)tiles[b][k][4 * n + i];
      memcpy(&tiles[dst][m][4 * n], &sum, 4);
    }
  }
  return 0;
}
