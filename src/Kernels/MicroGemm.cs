using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LongCluster.Kernels;

/// <summary>
/// The small GEMM both halves of a flash-attention tile are made of: <c>C[rows × cols] (+)= A[rows × k] · B[k × cols]</c>,
/// row-major with leading dimensions, <c>cols</c> a multiple of 8 (callers pad); B is f32, or bf16 read in place
/// and widened in registers (<see cref="WideLoad"/>). For S = Q·Kᵀ, A is the scaled query
/// block and B the packed Kᵀ tile; for O += P·V, A is the probability block and B the packed V tile.
/// Register blocking: Vector512 6 rows × 64 columns (24 zmm accumulators of the 32, plus 4 for B and one broadcast);
/// Vector256 6 × 16 (12 ymm); Vector128 4 × 8. The columns a block's width leaves go in blocks of 16 and 8 columns of
/// the same rows (6 or 4), never row by row: one row alone is a single chain of dependent FMAs. Every vector path
/// computes each element of C as one fused multiply-add per k in increasing k from its start value, so Vector512 and
/// Vector256 (and Vector128) give the same bits; the scalar path rounds the product and the sum separately.
/// </summary>
internal static unsafe class MicroGemm
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run<TB>(SimdLevel level, float* a, int lda, TB* b, int ldb, float* c, int ldc, int rows, int cols, int k, bool accumulate)
        where TB : unmanaged
    {
        WideLoad.EnsureSupported<TB>();
        switch (level)
        {
            case SimdLevel.Vector512:
                Run512(a, lda, b, ldb, c, ldc, rows, cols, k, accumulate);
                break;
            case SimdLevel.Vector256:
                Run256(a, lda, b, ldb, c, ldc, rows, cols, k, accumulate);
                break;
            case SimdLevel.Vector128:
                Run128(a, lda, b, ldb, c, ldc, rows, cols, k, accumulate);
                break;
            default:
                RunScalar(a, lda, b, ldb, c, ldc, rows, cols, k, accumulate);
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run512<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int rows, int cols, int k, bool accumulate)
        where TB : unmanaged
    {
        int r = 0;
        for (; r + 6 <= rows; r += 6)
        {
            float* ar = a + (r * lda);
            float* cr = c + (r * ldc);
            int j = 0;
            for (; j + 64 <= cols; j += 64)
            {
                Block6x64(ar, lda, b + j, ldb, cr + j, ldc, k, accumulate);
            }

            if (j + 32 <= cols)
            {
                Block6x32x512(ar, lda, b + j, ldb, cr + j, ldc, k, accumulate);
                j += 32;
            }

            if (j + 16 <= cols)
            {
                Block6x16x512(ar, lda, b + j, ldb, cr + j, ldc, k, accumulate);
                j += 16;
            }

            if (j < cols)
            {
                Block6x8(ar, lda, b + j, ldb, cr + j, ldc, k, accumulate);
            }
        }

        if (r + 4 <= rows)
        {
            // Decode's usual group of 4 query heads per KV head lands here.
            int j = 0;
            for (; j + 64 <= cols; j += 64)
            {
                Block4x64(a + (r * lda), lda, b + j, ldb, c + (r * ldc) + j, ldc, k, accumulate);
            }

            // Head dims such as 80 and 96 leave 16 or 32 columns: four rows at a time on Vector256, not one row's single
            // chain of FMAs at a time.
            for (; j + 16 <= cols; j += 16)
            {
                Block4x16(a + (r * lda), lda, b + j, ldb, c + (r * ldc) + j, ldc, k, accumulate);
            }

            if (j < cols)
            {
                Block4x8(a + (r * lda), lda, b + j, ldb, c + (r * ldc) + j, ldc, k, accumulate);
            }

            r += 4;
        }

        for (; r < rows; r++)
        {
            RowFrom512(a + (r * lda), b, ldb, c + (r * ldc), 0, cols, k, accumulate);
        }
    }

    /// <summary>One row of C from column <paramref name="j"/> on.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowFrom512<TB>(float* a, TB* b, int ldb, float* c, int j, int cols, int k, bool accumulate)
        where TB : unmanaged
    {
        for (; j + 64 <= cols; j += 64)
        {
            Block1x64(a, b + j, ldb, c + j, k, accumulate);
        }

        for (; j + 16 <= cols; j += 16)
        {
            Block1x16x512(a, b + j, ldb, c + j, k, accumulate);
        }

        if (j < cols)
        {
            Block1x8(a, b + j, ldb, c + j, k, accumulate);
        }
    }

    /// <summary>
    /// C[4 × 64] (+)= A[4 × k] · B[k × 64] on Vector512 (the caller checks it is supported). With
    /// <paramref name="prefetch"/> not null, each step of k also asks for <paramref name="prefetchLines"/> cache lines
    /// from there on: decode's P·V asks for the next tile's V here, spread over its arithmetic.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Block4x64<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int k, bool accumulate, byte* prefetch = null, int prefetchLines = 0)
        where TB : unmanaged
    {
        Vector512<float> c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33;
        float* c0 = c;
        float* c1 = c + ldc;
        float* c2 = c1 + ldc;
        float* c3 = c2 + ldc;
        if (accumulate)
        {
            c00 = Vector512.Load(c0); c01 = Vector512.Load(c0 + 16); c02 = Vector512.Load(c0 + 32); c03 = Vector512.Load(c0 + 48);
            c10 = Vector512.Load(c1); c11 = Vector512.Load(c1 + 16); c12 = Vector512.Load(c1 + 32); c13 = Vector512.Load(c1 + 48);
            c20 = Vector512.Load(c2); c21 = Vector512.Load(c2 + 16); c22 = Vector512.Load(c2 + 32); c23 = Vector512.Load(c2 + 48);
            c30 = Vector512.Load(c3); c31 = Vector512.Load(c3 + 16); c32 = Vector512.Load(c3 + 32); c33 = Vector512.Load(c3 + 48);
        }
        else
        {
            c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = Vector512<float>.Zero;
        }

        float* a0 = a;
        float* a1 = a + lda;
        float* a2 = a1 + lda;
        float* a3 = a2 + lda;
        for (int p = 0; p < k; p++)
        {
            if (prefetch != null)
            {
                prefetch = PrefetchWalk.Ask(prefetch, prefetchLines);
            }

            Vector512<float> b0 = WideLoad.Load16(b);
            Vector512<float> b1 = WideLoad.Load16(b + 16);
            Vector512<float> b2 = WideLoad.Load16(b + 32);
            Vector512<float> b3 = WideLoad.Load16(b + 48);
            b += ldb;
            Vector512<float> x = Vector512.Create(a0[p]);
            c00 = Vector512.MultiplyAddEstimate(x, b0, c00);
            c01 = Vector512.MultiplyAddEstimate(x, b1, c01);
            c02 = Vector512.MultiplyAddEstimate(x, b2, c02);
            c03 = Vector512.MultiplyAddEstimate(x, b3, c03);
            x = Vector512.Create(a1[p]);
            c10 = Vector512.MultiplyAddEstimate(x, b0, c10);
            c11 = Vector512.MultiplyAddEstimate(x, b1, c11);
            c12 = Vector512.MultiplyAddEstimate(x, b2, c12);
            c13 = Vector512.MultiplyAddEstimate(x, b3, c13);
            x = Vector512.Create(a2[p]);
            c20 = Vector512.MultiplyAddEstimate(x, b0, c20);
            c21 = Vector512.MultiplyAddEstimate(x, b1, c21);
            c22 = Vector512.MultiplyAddEstimate(x, b2, c22);
            c23 = Vector512.MultiplyAddEstimate(x, b3, c23);
            x = Vector512.Create(a3[p]);
            c30 = Vector512.MultiplyAddEstimate(x, b0, c30);
            c31 = Vector512.MultiplyAddEstimate(x, b1, c31);
            c32 = Vector512.MultiplyAddEstimate(x, b2, c32);
            c33 = Vector512.MultiplyAddEstimate(x, b3, c33);
        }

        c00.Store(c0); c01.Store(c0 + 16); c02.Store(c0 + 32); c03.Store(c0 + 48);
        c10.Store(c1); c11.Store(c1 + 16); c12.Store(c1 + 32); c13.Store(c1 + 48);
        c20.Store(c2); c21.Store(c2 + 16); c22.Store(c2 + 32); c23.Store(c2 + 48);
        c30.Store(c3); c31.Store(c3 + 16); c32.Store(c3 + 32); c33.Store(c3 + 48);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block6x64<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int k, bool accumulate)
        where TB : unmanaged
    {
        Vector512<float> c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23;
        Vector512<float> c30, c31, c32, c33, c40, c41, c42, c43, c50, c51, c52, c53;
        float* c0 = c;
        float* c1 = c + ldc;
        float* c2 = c1 + ldc;
        float* c3 = c2 + ldc;
        float* c4 = c3 + ldc;
        float* c5 = c4 + ldc;
        if (accumulate)
        {
            c00 = Vector512.Load(c0); c01 = Vector512.Load(c0 + 16); c02 = Vector512.Load(c0 + 32); c03 = Vector512.Load(c0 + 48);
            c10 = Vector512.Load(c1); c11 = Vector512.Load(c1 + 16); c12 = Vector512.Load(c1 + 32); c13 = Vector512.Load(c1 + 48);
            c20 = Vector512.Load(c2); c21 = Vector512.Load(c2 + 16); c22 = Vector512.Load(c2 + 32); c23 = Vector512.Load(c2 + 48);
            c30 = Vector512.Load(c3); c31 = Vector512.Load(c3 + 16); c32 = Vector512.Load(c3 + 32); c33 = Vector512.Load(c3 + 48);
            c40 = Vector512.Load(c4); c41 = Vector512.Load(c4 + 16); c42 = Vector512.Load(c4 + 32); c43 = Vector512.Load(c4 + 48);
            c50 = Vector512.Load(c5); c51 = Vector512.Load(c5 + 16); c52 = Vector512.Load(c5 + 32); c53 = Vector512.Load(c5 + 48);
        }
        else
        {
            c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = c20 = c21 = c22 = c23 = Vector512<float>.Zero;
            c30 = c31 = c32 = c33 = c40 = c41 = c42 = c43 = c50 = c51 = c52 = c53 = Vector512<float>.Zero;
        }

        float* a0 = a;
        float* a1 = a + lda;
        float* a2 = a1 + lda;
        float* a3 = a2 + lda;
        float* a4 = a3 + lda;
        float* a5 = a4 + lda;
        for (int p = 0; p < k; p++)
        {
            Vector512<float> b0 = WideLoad.Load16(b);
            Vector512<float> b1 = WideLoad.Load16(b + 16);
            Vector512<float> b2 = WideLoad.Load16(b + 32);
            Vector512<float> b3 = WideLoad.Load16(b + 48);
            b += ldb;
            Vector512<float> x = Vector512.Create(a0[p]);
            c00 = Vector512.MultiplyAddEstimate(x, b0, c00);
            c01 = Vector512.MultiplyAddEstimate(x, b1, c01);
            c02 = Vector512.MultiplyAddEstimate(x, b2, c02);
            c03 = Vector512.MultiplyAddEstimate(x, b3, c03);
            x = Vector512.Create(a1[p]);
            c10 = Vector512.MultiplyAddEstimate(x, b0, c10);
            c11 = Vector512.MultiplyAddEstimate(x, b1, c11);
            c12 = Vector512.MultiplyAddEstimate(x, b2, c12);
            c13 = Vector512.MultiplyAddEstimate(x, b3, c13);
            x = Vector512.Create(a2[p]);
            c20 = Vector512.MultiplyAddEstimate(x, b0, c20);
            c21 = Vector512.MultiplyAddEstimate(x, b1, c21);
            c22 = Vector512.MultiplyAddEstimate(x, b2, c22);
            c23 = Vector512.MultiplyAddEstimate(x, b3, c23);
            x = Vector512.Create(a3[p]);
            c30 = Vector512.MultiplyAddEstimate(x, b0, c30);
            c31 = Vector512.MultiplyAddEstimate(x, b1, c31);
            c32 = Vector512.MultiplyAddEstimate(x, b2, c32);
            c33 = Vector512.MultiplyAddEstimate(x, b3, c33);
            x = Vector512.Create(a4[p]);
            c40 = Vector512.MultiplyAddEstimate(x, b0, c40);
            c41 = Vector512.MultiplyAddEstimate(x, b1, c41);
            c42 = Vector512.MultiplyAddEstimate(x, b2, c42);
            c43 = Vector512.MultiplyAddEstimate(x, b3, c43);
            x = Vector512.Create(a5[p]);
            c50 = Vector512.MultiplyAddEstimate(x, b0, c50);
            c51 = Vector512.MultiplyAddEstimate(x, b1, c51);
            c52 = Vector512.MultiplyAddEstimate(x, b2, c52);
            c53 = Vector512.MultiplyAddEstimate(x, b3, c53);
        }

        c00.Store(c0); c01.Store(c0 + 16); c02.Store(c0 + 32); c03.Store(c0 + 48);
        c10.Store(c1); c11.Store(c1 + 16); c12.Store(c1 + 32); c13.Store(c1 + 48);
        c20.Store(c2); c21.Store(c2 + 16); c22.Store(c2 + 32); c23.Store(c2 + 48);
        c30.Store(c3); c31.Store(c3 + 16); c32.Store(c3 + 32); c33.Store(c3 + 48);
        c40.Store(c4); c41.Store(c4 + 16); c42.Store(c4 + 32); c43.Store(c4 + 48);
        c50.Store(c5); c51.Store(c5 + 16); c52.Store(c5 + 32); c53.Store(c5 + 48);
    }

    /// <summary>32 columns of 6 rows: twelve accumulators in flight, where two 6 × 16 blocks had six each.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block6x32x512<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int k, bool accumulate)
        where TB : unmanaged
    {
        Vector512<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
        float* c0 = c;
        float* c1 = c + ldc;
        float* c2 = c1 + ldc;
        float* c3 = c2 + ldc;
        float* c4 = c3 + ldc;
        float* c5 = c4 + ldc;
        if (accumulate)
        {
            c00 = Vector512.Load(c0); c01 = Vector512.Load(c0 + 16);
            c10 = Vector512.Load(c1); c11 = Vector512.Load(c1 + 16);
            c20 = Vector512.Load(c2); c21 = Vector512.Load(c2 + 16);
            c30 = Vector512.Load(c3); c31 = Vector512.Load(c3 + 16);
            c40 = Vector512.Load(c4); c41 = Vector512.Load(c4 + 16);
            c50 = Vector512.Load(c5); c51 = Vector512.Load(c5 + 16);
        }
        else
        {
            c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = Vector512<float>.Zero;
        }

        for (int p = 0; p < k; p++)
        {
            Vector512<float> b0 = WideLoad.Load16(b);
            Vector512<float> b1 = WideLoad.Load16(b + 16);
            b += ldb;
            Vector512<float> x = Vector512.Create(a[p]);
            c00 = Vector512.MultiplyAddEstimate(x, b0, c00);
            c01 = Vector512.MultiplyAddEstimate(x, b1, c01);
            x = Vector512.Create(a[lda + p]);
            c10 = Vector512.MultiplyAddEstimate(x, b0, c10);
            c11 = Vector512.MultiplyAddEstimate(x, b1, c11);
            x = Vector512.Create(a[(2 * lda) + p]);
            c20 = Vector512.MultiplyAddEstimate(x, b0, c20);
            c21 = Vector512.MultiplyAddEstimate(x, b1, c21);
            x = Vector512.Create(a[(3 * lda) + p]);
            c30 = Vector512.MultiplyAddEstimate(x, b0, c30);
            c31 = Vector512.MultiplyAddEstimate(x, b1, c31);
            x = Vector512.Create(a[(4 * lda) + p]);
            c40 = Vector512.MultiplyAddEstimate(x, b0, c40);
            c41 = Vector512.MultiplyAddEstimate(x, b1, c41);
            x = Vector512.Create(a[(5 * lda) + p]);
            c50 = Vector512.MultiplyAddEstimate(x, b0, c50);
            c51 = Vector512.MultiplyAddEstimate(x, b1, c51);
        }

        c00.Store(c0); c01.Store(c0 + 16);
        c10.Store(c1); c11.Store(c1 + 16);
        c20.Store(c2); c21.Store(c2 + 16);
        c30.Store(c3); c31.Store(c3 + 16);
        c40.Store(c4); c41.Store(c4 + 16);
        c50.Store(c5); c51.Store(c5 + 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block6x16x512<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int k, bool accumulate)
        where TB : unmanaged
    {
        Vector512<float> c0, c1, c2, c3, c4, c5;
        if (accumulate)
        {
            c0 = Vector512.Load(c);
            c1 = Vector512.Load(c + ldc);
            c2 = Vector512.Load(c + (2 * ldc));
            c3 = Vector512.Load(c + (3 * ldc));
            c4 = Vector512.Load(c + (4 * ldc));
            c5 = Vector512.Load(c + (5 * ldc));
        }
        else
        {
            c0 = c1 = c2 = c3 = c4 = c5 = Vector512<float>.Zero;
        }

        for (int p = 0; p < k; p++)
        {
            Vector512<float> b0 = WideLoad.Load16(b);
            b += ldb;
            c0 = Vector512.MultiplyAddEstimate(Vector512.Create(a[p]), b0, c0);
            c1 = Vector512.MultiplyAddEstimate(Vector512.Create(a[lda + p]), b0, c1);
            c2 = Vector512.MultiplyAddEstimate(Vector512.Create(a[(2 * lda) + p]), b0, c2);
            c3 = Vector512.MultiplyAddEstimate(Vector512.Create(a[(3 * lda) + p]), b0, c3);
            c4 = Vector512.MultiplyAddEstimate(Vector512.Create(a[(4 * lda) + p]), b0, c4);
            c5 = Vector512.MultiplyAddEstimate(Vector512.Create(a[(5 * lda) + p]), b0, c5);
        }

        c0.Store(c);
        c1.Store(c + ldc);
        c2.Store(c + (2 * ldc));
        c3.Store(c + (3 * ldc));
        c4.Store(c + (4 * ldc));
        c5.Store(c + (5 * ldc));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block1x64<TB>(float* a, TB* b, int ldb, float* c, int k, bool accumulate)
        where TB : unmanaged
    {
        Vector512<float> c0 = accumulate ? Vector512.Load(c) : Vector512<float>.Zero;
        Vector512<float> c1 = accumulate ? Vector512.Load(c + 16) : Vector512<float>.Zero;
        Vector512<float> c2 = accumulate ? Vector512.Load(c + 32) : Vector512<float>.Zero;
        Vector512<float> c3 = accumulate ? Vector512.Load(c + 48) : Vector512<float>.Zero;
        for (int p = 0; p < k; p++)
        {
            Vector512<float> x = Vector512.Create(a[p]);
            c0 = Vector512.MultiplyAddEstimate(x, WideLoad.Load16(b), c0);
            c1 = Vector512.MultiplyAddEstimate(x, WideLoad.Load16(b + 16), c1);
            c2 = Vector512.MultiplyAddEstimate(x, WideLoad.Load16(b + 32), c2);
            c3 = Vector512.MultiplyAddEstimate(x, WideLoad.Load16(b + 48), c3);
            b += ldb;
        }

        c0.Store(c);
        c1.Store(c + 16);
        c2.Store(c + 32);
        c3.Store(c + 48);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block1x16x512<TB>(float* a, TB* b, int ldb, float* c, int k, bool accumulate)
        where TB : unmanaged
    {
        Vector512<float> c0 = accumulate ? Vector512.Load(c) : Vector512<float>.Zero;
        for (int p = 0; p < k; p++)
        {
            c0 = Vector512.MultiplyAddEstimate(Vector512.Create(a[p]), WideLoad.Load16(b), c0);
            b += ldb;
        }

        c0.Store(c);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void RunScalar<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int rows, int cols, int k, bool accumulate)
        where TB : unmanaged
    {
        for (int r = 0; r < rows; r++)
        {
            float* cr = c + (r * ldc);
            if (!accumulate)
            {
                new Span<float>(cr, cols).Clear();
            }

            for (int p = 0; p < k; p++)
            {
                float x = a[(r * lda) + p];
                TB* bp = b + (p * ldb);
                for (int j = 0; j < cols; j++)
                {
                    cr[j] += x * WideLoad.Single(bp[j]);
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run256<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int rows, int cols, int k, bool accumulate)
        where TB : unmanaged
    {
        int r = 0;
        for (; r + 6 <= rows; r += 6)
        {
            int j = 0;
            for (; j + 16 <= cols; j += 16)
            {
                Block6x16(a + (r * lda), lda, b + j, ldb, c + (r * ldc) + j, ldc, k, accumulate);
            }

            for (; j < cols; j += 8)
            {
                Block6x8(a + (r * lda), lda, b + j, ldb, c + (r * ldc) + j, ldc, k, accumulate);
            }
        }

        for (; r + 4 <= rows; r += 4)
        {
            int j = 0;
            for (; j + 16 <= cols; j += 16)
            {
                Block4x16(a + (r * lda), lda, b + j, ldb, c + (r * ldc) + j, ldc, k, accumulate);
            }

            for (; j < cols; j += 8)
            {
                Block4x8(a + (r * lda), lda, b + j, ldb, c + (r * ldc) + j, ldc, k, accumulate);
            }
        }

        for (; r < rows; r++)
        {
            int j = 0;
            for (; j + 16 <= cols; j += 16)
            {
                Block1x16(a + (r * lda), b + j, ldb, c + (r * ldc) + j, k, accumulate);
            }

            for (; j < cols; j += 8)
            {
                Block1x8(a + (r * lda), b + j, ldb, c + (r * ldc) + j, k, accumulate);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block4x16<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int k, bool accumulate)
        where TB : unmanaged
    {
        Vector256<float> c00, c01, c10, c11, c20, c21, c30, c31;
        if (accumulate)
        {
            c00 = Vector256.Load(c);
            c01 = Vector256.Load(c + 8);
            c10 = Vector256.Load(c + ldc);
            c11 = Vector256.Load(c + ldc + 8);
            c20 = Vector256.Load(c + (2 * ldc));
            c21 = Vector256.Load(c + (2 * ldc) + 8);
            c30 = Vector256.Load(c + (3 * ldc));
            c31 = Vector256.Load(c + (3 * ldc) + 8);
        }
        else
        {
            c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = Vector256<float>.Zero;
        }

        float* a0 = a;
        float* a1 = a + lda;
        float* a2 = a + (2 * lda);
        float* a3 = a + (3 * lda);
        for (int p = 0; p < k; p++)
        {
            Vector256<float> b0 = WideLoad.Load8(b);
            Vector256<float> b1 = WideLoad.Load8(b + 8);
            b += ldb;
            Vector256<float> x = Vector256.Create(a0[p]);
            c00 = Vector256.MultiplyAddEstimate(x, b0, c00);
            c01 = Vector256.MultiplyAddEstimate(x, b1, c01);
            x = Vector256.Create(a1[p]);
            c10 = Vector256.MultiplyAddEstimate(x, b0, c10);
            c11 = Vector256.MultiplyAddEstimate(x, b1, c11);
            x = Vector256.Create(a2[p]);
            c20 = Vector256.MultiplyAddEstimate(x, b0, c20);
            c21 = Vector256.MultiplyAddEstimate(x, b1, c21);
            x = Vector256.Create(a3[p]);
            c30 = Vector256.MultiplyAddEstimate(x, b0, c30);
            c31 = Vector256.MultiplyAddEstimate(x, b1, c31);
        }

        c00.Store(c);
        c01.Store(c + 8);
        c10.Store(c + ldc);
        c11.Store(c + ldc + 8);
        c20.Store(c + (2 * ldc));
        c21.Store(c + (2 * ldc) + 8);
        c30.Store(c + (3 * ldc));
        c31.Store(c + (3 * ldc) + 8);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block6x16<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int k, bool accumulate)
        where TB : unmanaged
    {
        Vector256<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
        if (accumulate)
        {
            c00 = Vector256.Load(c);
            c01 = Vector256.Load(c + 8);
            c10 = Vector256.Load(c + ldc);
            c11 = Vector256.Load(c + ldc + 8);
            c20 = Vector256.Load(c + (2 * ldc));
            c21 = Vector256.Load(c + (2 * ldc) + 8);
            c30 = Vector256.Load(c + (3 * ldc));
            c31 = Vector256.Load(c + (3 * ldc) + 8);
            c40 = Vector256.Load(c + (4 * ldc));
            c41 = Vector256.Load(c + (4 * ldc) + 8);
            c50 = Vector256.Load(c + (5 * ldc));
            c51 = Vector256.Load(c + (5 * ldc) + 8);
        }
        else
        {
            c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = Vector256<float>.Zero;
        }

        float* a0 = a;
        float* a1 = a + lda;
        float* a2 = a + (2 * lda);
        float* a3 = a + (3 * lda);
        float* a4 = a + (4 * lda);
        float* a5 = a + (5 * lda);
        for (int p = 0; p < k; p++)
        {
            Vector256<float> b0 = WideLoad.Load8(b);
            Vector256<float> b1 = WideLoad.Load8(b + 8);
            b += ldb;
            Vector256<float> x = Vector256.Create(a0[p]);
            c00 = Vector256.MultiplyAddEstimate(x, b0, c00);
            c01 = Vector256.MultiplyAddEstimate(x, b1, c01);
            x = Vector256.Create(a1[p]);
            c10 = Vector256.MultiplyAddEstimate(x, b0, c10);
            c11 = Vector256.MultiplyAddEstimate(x, b1, c11);
            x = Vector256.Create(a2[p]);
            c20 = Vector256.MultiplyAddEstimate(x, b0, c20);
            c21 = Vector256.MultiplyAddEstimate(x, b1, c21);
            x = Vector256.Create(a3[p]);
            c30 = Vector256.MultiplyAddEstimate(x, b0, c30);
            c31 = Vector256.MultiplyAddEstimate(x, b1, c31);
            x = Vector256.Create(a4[p]);
            c40 = Vector256.MultiplyAddEstimate(x, b0, c40);
            c41 = Vector256.MultiplyAddEstimate(x, b1, c41);
            x = Vector256.Create(a5[p]);
            c50 = Vector256.MultiplyAddEstimate(x, b0, c50);
            c51 = Vector256.MultiplyAddEstimate(x, b1, c51);
        }

        c00.Store(c);
        c01.Store(c + 8);
        c10.Store(c + ldc);
        c11.Store(c + ldc + 8);
        c20.Store(c + (2 * ldc));
        c21.Store(c + (2 * ldc) + 8);
        c30.Store(c + (3 * ldc));
        c31.Store(c + (3 * ldc) + 8);
        c40.Store(c + (4 * ldc));
        c41.Store(c + (4 * ldc) + 8);
        c50.Store(c + (5 * ldc));
        c51.Store(c + (5 * ldc) + 8);
    }

    /// <summary>The 8 columns left of a 4-row block, as <see cref="Block6x8{TB}"/> for 6 rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block4x8<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int k, bool accumulate)
        where TB : unmanaged
    {
        Vector256<float> c0, c1, c2, c3;
        if (accumulate)
        {
            c0 = Vector256.Load(c);
            c1 = Vector256.Load(c + ldc);
            c2 = Vector256.Load(c + (2 * ldc));
            c3 = Vector256.Load(c + (3 * ldc));
        }
        else
        {
            c0 = c1 = c2 = c3 = Vector256<float>.Zero;
        }

        float* a0 = a;
        float* a1 = a + lda;
        float* a2 = a + (2 * lda);
        float* a3 = a + (3 * lda);
        for (int p = 0; p < k; p++)
        {
            Vector256<float> x = WideLoad.Load8(b);
            b += ldb;
            c0 = Vector256.MultiplyAddEstimate(Vector256.Create(a0[p]), x, c0);
            c1 = Vector256.MultiplyAddEstimate(Vector256.Create(a1[p]), x, c1);
            c2 = Vector256.MultiplyAddEstimate(Vector256.Create(a2[p]), x, c2);
            c3 = Vector256.MultiplyAddEstimate(Vector256.Create(a3[p]), x, c3);
        }

        c0.Store(c);
        c1.Store(c + ldc);
        c2.Store(c + (2 * ldc));
        c3.Store(c + (3 * ldc));
    }

    /// <summary>
    /// The 8 columns left of a 6-row block (a causal diagonal's visible keys end on any multiple of 8), on Vector256 for
    /// both wide paths: six accumulators in flight, where one row at a time kept a single chain of dependent FMAs.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block6x8<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int k, bool accumulate)
        where TB : unmanaged
    {
        Vector256<float> c0, c1, c2, c3, c4, c5;
        if (accumulate)
        {
            c0 = Vector256.Load(c);
            c1 = Vector256.Load(c + ldc);
            c2 = Vector256.Load(c + (2 * ldc));
            c3 = Vector256.Load(c + (3 * ldc));
            c4 = Vector256.Load(c + (4 * ldc));
            c5 = Vector256.Load(c + (5 * ldc));
        }
        else
        {
            c0 = c1 = c2 = c3 = c4 = c5 = Vector256<float>.Zero;
        }

        float* a0 = a;
        float* a1 = a + lda;
        float* a2 = a + (2 * lda);
        float* a3 = a + (3 * lda);
        float* a4 = a + (4 * lda);
        float* a5 = a + (5 * lda);
        for (int p = 0; p < k; p++)
        {
            Vector256<float> x = WideLoad.Load8(b);
            b += ldb;
            c0 = Vector256.MultiplyAddEstimate(Vector256.Create(a0[p]), x, c0);
            c1 = Vector256.MultiplyAddEstimate(Vector256.Create(a1[p]), x, c1);
            c2 = Vector256.MultiplyAddEstimate(Vector256.Create(a2[p]), x, c2);
            c3 = Vector256.MultiplyAddEstimate(Vector256.Create(a3[p]), x, c3);
            c4 = Vector256.MultiplyAddEstimate(Vector256.Create(a4[p]), x, c4);
            c5 = Vector256.MultiplyAddEstimate(Vector256.Create(a5[p]), x, c5);
        }

        c0.Store(c);
        c1.Store(c + ldc);
        c2.Store(c + (2 * ldc));
        c3.Store(c + (3 * ldc));
        c4.Store(c + (4 * ldc));
        c5.Store(c + (5 * ldc));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block1x16<TB>(float* a, TB* b, int ldb, float* c, int k, bool accumulate)
        where TB : unmanaged
    {
        Vector256<float> c0 = accumulate ? Vector256.Load(c) : Vector256<float>.Zero;
        Vector256<float> c1 = accumulate ? Vector256.Load(c + 8) : Vector256<float>.Zero;
        for (int p = 0; p < k; p++)
        {
            Vector256<float> x = Vector256.Create(a[p]);
            c0 = Vector256.MultiplyAddEstimate(x, WideLoad.Load8(b), c0);
            c1 = Vector256.MultiplyAddEstimate(x, WideLoad.Load8(b + 8), c1);
            b += ldb;
        }

        c0.Store(c);
        c1.Store(c + 8);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block1x8<TB>(float* a, TB* b, int ldb, float* c, int k, bool accumulate)
        where TB : unmanaged
    {
        Vector256<float> c0 = accumulate ? Vector256.Load(c) : Vector256<float>.Zero;
        for (int p = 0; p < k; p++)
        {
            c0 = Vector256.MultiplyAddEstimate(Vector256.Create(a[p]), WideLoad.Load8(b), c0);
            b += ldb;
        }

        c0.Store(c);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run128<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int rows, int cols, int k, bool accumulate)
        where TB : unmanaged
    {
        int r = 0;
        for (; r + 4 <= rows; r += 4)
        {
            for (int j = 0; j < cols; j += 8)
            {
                Block4x8x128(a + (r * lda), lda, b + j, ldb, c + (r * ldc) + j, ldc, k, accumulate);
            }
        }

        for (; r < rows; r++)
        {
            for (int j = 0; j < cols; j += 8)
            {
                float* ar = a + (r * lda);
                float* cr = c + (r * ldc) + j;
                TB* bp = b + j;
                Vector128<float> c0 = accumulate ? Vector128.Load(cr) : Vector128<float>.Zero;
                Vector128<float> c1 = accumulate ? Vector128.Load(cr + 4) : Vector128<float>.Zero;
                for (int p = 0; p < k; p++)
                {
                    Vector128<float> x = Vector128.Create(ar[p]);
                    c0 = Vector128.MultiplyAddEstimate(x, WideLoad.Load4(bp), c0);
                    c1 = Vector128.MultiplyAddEstimate(x, WideLoad.Load4(bp + 4), c1);
                    bp += ldb;
                }

                c0.Store(cr);
                c1.Store(cr + 4);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block4x8x128<TB>(float* a, int lda, TB* b, int ldb, float* c, int ldc, int k, bool accumulate)
        where TB : unmanaged
    {
        Vector128<float> c00, c01, c10, c11, c20, c21, c30, c31;
        if (accumulate)
        {
            c00 = Vector128.Load(c);
            c01 = Vector128.Load(c + 4);
            c10 = Vector128.Load(c + ldc);
            c11 = Vector128.Load(c + ldc + 4);
            c20 = Vector128.Load(c + (2 * ldc));
            c21 = Vector128.Load(c + (2 * ldc) + 4);
            c30 = Vector128.Load(c + (3 * ldc));
            c31 = Vector128.Load(c + (3 * ldc) + 4);
        }
        else
        {
            c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = Vector128<float>.Zero;
        }

        for (int p = 0; p < k; p++)
        {
            Vector128<float> b0 = WideLoad.Load4(b);
            Vector128<float> b1 = WideLoad.Load4(b + 4);
            b += ldb;
            Vector128<float> x = Vector128.Create(a[p]);
            c00 = Vector128.MultiplyAddEstimate(x, b0, c00);
            c01 = Vector128.MultiplyAddEstimate(x, b1, c01);
            x = Vector128.Create(a[lda + p]);
            c10 = Vector128.MultiplyAddEstimate(x, b0, c10);
            c11 = Vector128.MultiplyAddEstimate(x, b1, c11);
            x = Vector128.Create(a[(2 * lda) + p]);
            c20 = Vector128.MultiplyAddEstimate(x, b0, c20);
            c21 = Vector128.MultiplyAddEstimate(x, b1, c21);
            x = Vector128.Create(a[(3 * lda) + p]);
            c30 = Vector128.MultiplyAddEstimate(x, b0, c30);
            c31 = Vector128.MultiplyAddEstimate(x, b1, c31);
        }

        c00.Store(c);
        c01.Store(c + 4);
        c10.Store(c + ldc);
        c11.Store(c + ldc + 4);
        c20.Store(c + (2 * ldc));
        c21.Store(c + (2 * ldc) + 4);
        c30.Store(c + (3 * ldc));
        c31.Store(c + (3 * ldc) + 4);
    }
}
