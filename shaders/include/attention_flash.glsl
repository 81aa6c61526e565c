// Shared pieces of the flash attention kernels (attention_flash_fwd, attention_flash_bwd_dq, attention_flash_bwd_dkv):
// a workgroup of FLASH_WG invocations owns FLASH_ROWS rows (query rows, or key rows for dk/dv) of one head (or of
// FLASH_HEADS heads sharing a kv head); each row is
// served by FLASH_TPR invocations ("lanes"), and lane l owns the head-dimension columns d = l + FLASH_TPR·n for
// n < FLASH_DPL. The other operand streams through shared memory in blocks of BC rows. Per-invocation arrays have
// compile-time sizes and are indexed only by compile-time-bounded loops (GPU compilers keep them in registers); dot
// products over the head dimension are split across the row's lanes and their partial sums combined in a fixed order.
#ifndef VKPEFT_ATTENTION_FLASH_GLSL
#define VKPEFT_ATTENTION_FLASH_GLSL

#include "attention.glsl"

#define FLASH_WG 64u                       // invocations per workgroup (the host passes it as specialization constant 0)
#define FLASH_ROWS 16u                     // rows a workgroup owns
#define FLASH_TPR (FLASH_WG / FLASH_ROWS)  // lanes per row
#define FLASH_DPL (HD / FLASH_TPR)         // head-dimension columns per lane (HD is a multiple of FLASH_TPR)

// This invocation's row inside the workgroup's block and its lane inside the row.
#define FLASH_R (gl_LocalInvocationID.x / FLASH_TPR)
#define FLASH_LANE (gl_LocalInvocationID.x % FLASH_TPR)

// Column of lane `lane`'s n-th value.
#define FLASH_COL(lane, n) ((lane) + FLASH_TPR * (n))

// Query-row kernels (forward, dq) pack FLASH_HEADS query heads of one kv-head group into a workgroup (rows ordered
// position-major, head-minor: FLASH_ROWS / FLASH_HEADS positions × FLASH_HEADS heads), so each key/value block staged
// in shared memory serves all of them. Specialization constant 1; divides both the group size and FLASH_ROWS.
layout(constant_id = 1) const uint FLASH_HEADS = 1u;
#define FLASH_POSITIONS (FLASH_ROWS / FLASH_HEADS)

#endif
