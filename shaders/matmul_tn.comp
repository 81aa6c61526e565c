#version 450
// matmul_tn: C[R,N] = alpha * P[K,R]ᵀ · Q[K,N] + beta * C, fp32 (the weight-gradient product; K is the token count).
// C[r,n] lives at c_offset + r·ldc_r + n·ldc_c, so callers may store the transpose. Each output is one invocation's
// fma chain over k in order (deterministic, no atomics). Default: 64x64 tiles in shared memory with a 4x4 register
// tile (GPUs). With -DLANES: one 8-lane subgroup per 8 x 64 tile, each lane owning 8 consecutive columns, P values
// broadcast across lanes (CPU devices). Writes C when beta == 0, else accumulates.
#extension GL_EXT_control_flow_attributes : enable

layout(std430, set = 0, binding = 0) readonly buffer BufP { float p[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufQ { float q[]; };
layout(std430, set = 0, binding = 2) buffer BufC { float c[]; };

layout(push_constant) uniform Push
{
    uint R, N, K;
    uint ldp, ldq;           // row strides of P and Q
    uint ldc_r, ldc_c;       // C strides of the row and column index
    uint p_offset, q_offset, c_offset;
    float alpha, beta;
} pc;

void store(uint r, uint n, float acc)
{
    uint o = pc.c_offset + r * pc.ldc_r + n * pc.ldc_c;
    float v = pc.alpha * acc;
    if (pc.beta != 0.0) v += pc.beta * c[o];
    c[o] = v;
}

#ifdef LANES
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_ballot : enable
#define SG 8u
layout(local_size_x = 8) in;

void main()
{
    uint lane = gl_SubgroupInvocationID;
    uint r0 = gl_WorkGroupID.y * SG;
    uint col0 = (gl_WorkGroupID.x * SG + lane) * 8u;           // this lane's first column
    uint prow = min(r0 + lane, pc.R - 1);                        // the row of C whose P value this lane loads
    uint qcol[8];
    [[unroll]] for (uint j = 0; j < 8u; j++) qcol[j] = min(col0 + j, pc.N - 1);

    float acc[SG][8];
    [[unroll]] for (uint i = 0; i < SG; i++)
        [[unroll]] for (uint j = 0; j < 8u; j++) acc[i][j] = 0.0;

    for (uint k = 0; k < pc.K; k++)
    {
        uint qrow = pc.q_offset + k * pc.ldq;
        float bv[8];
        [[unroll]] for (uint j = 0; j < 8u; j++) bv[j] = q[qrow + qcol[j]];
        float av = p[pc.p_offset + k * pc.ldp + prow];             // consecutive lanes, consecutive addresses
        [[unroll]] for (uint s = 0; s < SG; s++)
        {
            float x = subgroupBroadcast(av, s);
            [[unroll]] for (uint j = 0; j < 8u; j++) acc[s][j] = fma(x, bv[j], acc[s][j]);
        }
    }

    [[unroll]] for (uint i = 0; i < SG; i++)
    {
        uint r = r0 + i;
        if (r >= pc.R) break;
        [[unroll]] for (uint j = 0; j < 8u; j++)
            if (col0 + j < pc.N) store(r, col0 + j, acc[i][j]);
    }
}

#else
#define WG 256u
#define BM 64u
#define BN 64u
#define BK 16u
#define TM 4u
#define TN 4u
layout(local_size_x = 256) in;

shared float Ps[BK][BM];
shared float Qs[BK][BN];

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint tx = tid % (BN / TN), ty = tid / (BN / TN);
    uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;

    float acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; i++)
        [[unroll]] for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;

    for (uint k0 = 0; k0 < pc.K; k0 += BK)
    {
        // Both operands are read along their rows (k fixed, r or n consecutive across invocations).
        [[unroll]] for (uint l = 0; l < BM * BK / WG; l++)
        {
            uint idx = tid + l * WG;
            uint kk = idx / BM, r = idx % BM;
            uint gk = k0 + kk, gr = row0 + r;
            Ps[kk][r] = (gk < pc.K && gr < pc.R) ? p[pc.p_offset + gk * pc.ldp + gr] : 0.0;
        }
        [[unroll]] for (uint l = 0; l < BN * BK / WG; l++)
        {
            uint idx = tid + l * WG;
            uint kk = idx / BN, n = idx % BN;
            uint gk = k0 + kk, gn = col0 + n;
            Qs[kk][n] = (gk < pc.K && gn < pc.N) ? q[pc.q_offset + gk * pc.ldq + gn] : 0.0;
        }
        barrier();
        [[unroll]] for (uint kk = 0; kk < BK; kk++)
        {
            float av[TM], bv[TN];
            [[unroll]] for (uint i = 0; i < TM; i++) av[i] = Ps[kk][ty + i * (BM / TM)];
            [[unroll]] for (uint j = 0; j < TN; j++) bv[j] = Qs[kk][tx + j * (BN / TN)];
            [[unroll]] for (uint i = 0; i < TM; i++)
                [[unroll]] for (uint j = 0; j < TN; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
        barrier();
    }

    [[unroll]] for (uint i = 0; i < TM; i++)
    {
        uint gr = row0 + ty + i * (BM / TM);
        if (gr >= pc.R) continue;
        [[unroll]] for (uint j = 0; j < TN; j++)
        {
            uint gc = col0 + tx + j * (BN / TN);
            if (gc < pc.N) store(gr, gc, acc[i][j]);
        }
    }
}
#endif
