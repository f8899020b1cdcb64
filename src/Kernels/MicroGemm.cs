using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LongCluster.Kernels;

/// <summary>
/// The small GEMM both halves of a flash-attention tile are made of: <c>C[rows × cols] (+)= A[rows × k] · B[k × cols]</c>,
/// row-major with leading dimensions, <c>cols</c> a multiple of 8 (callers pad). For S = Q·Kᵀ, A is the scaled query
/// block and B the packed Kᵀ tile; for O += P·V, A is the probability block and B the packed V tile.
/// Register blocking: 4 rows × 16 columns of accumulators (8 ymm), each step one broadcast of A per row and two
/// loads of B. Vector256 → Vector128 → scalar.
/// </summary>
internal static unsafe class MicroGemm
{
    public static void Run(float* a, int lda, float* b, int ldb, float* c, int ldc, int rows, int cols, int k, bool accumulate)
    {
        if (Vector256.IsHardwareAccelerated)
        {
            Run256(a, lda, b, ldb, c, ldc, rows, cols, k, accumulate);
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            Run128(a, lda, b, ldb, c, ldc, rows, cols, k, accumulate);
        }
        else
        {
            RunScalar(a, lda, b, ldb, c, ldc, rows, cols, k, accumulate);
        }
    }

    internal static void RunScalar(float* a, int lda, float* b, int ldb, float* c, int ldc, int rows, int cols, int k, bool accumulate)
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
                float* bp = b + (p * ldb);
                for (int j = 0; j < cols; j++)
                {
                    cr[j] += x * bp[j];
                }
            }
        }
    }

    private static void Run256(float* a, int lda, float* b, int ldb, float* c, int ldc, int rows, int cols, int k, bool accumulate)
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
                for (int i = 0; i < 6; i++)
                {
                    Block1x8(a + ((r + i) * lda), b + j, ldb, c + ((r + i) * ldc) + j, k, accumulate);
                }
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
                for (int i = 0; i < 4; i++)
                {
                    Block1x8(a + ((r + i) * lda), b + j, ldb, c + ((r + i) * ldc) + j, k, accumulate);
                }
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
    private static void Block4x16(float* a, int lda, float* b, int ldb, float* c, int ldc, int k, bool accumulate)
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
            Vector256<float> b0 = Vector256.Load(b);
            Vector256<float> b1 = Vector256.Load(b + 8);
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
    private static void Block6x16(float* a, int lda, float* b, int ldb, float* c, int ldc, int k, bool accumulate)
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
            Vector256<float> b0 = Vector256.Load(b);
            Vector256<float> b1 = Vector256.Load(b + 8);
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

    private static void Block1x16(float* a, float* b, int ldb, float* c, int k, bool accumulate)
    {
        Vector256<float> c0 = accumulate ? Vector256.Load(c) : Vector256<float>.Zero;
        Vector256<float> c1 = accumulate ? Vector256.Load(c + 8) : Vector256<float>.Zero;
        for (int p = 0; p < k; p++)
        {
            Vector256<float> x = Vector256.Create(a[p]);
            c0 = Vector256.MultiplyAddEstimate(x, Vector256.Load(b), c0);
            c1 = Vector256.MultiplyAddEstimate(x, Vector256.Load(b + 8), c1);
            b += ldb;
        }

        c0.Store(c);
        c1.Store(c + 8);
    }

    private static void Block1x8(float* a, float* b, int ldb, float* c, int k, bool accumulate)
    {
        Vector256<float> c0 = accumulate ? Vector256.Load(c) : Vector256<float>.Zero;
        for (int p = 0; p < k; p++)
        {
            c0 = Vector256.MultiplyAddEstimate(Vector256.Create(a[p]), Vector256.Load(b), c0);
            b += ldb;
        }

        c0.Store(c);
    }

    private static void Run128(float* a, int lda, float* b, int ldb, float* c, int ldc, int rows, int cols, int k, bool accumulate)
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
                float* bp = b + j;
                Vector128<float> c0 = accumulate ? Vector128.Load(cr) : Vector128<float>.Zero;
                Vector128<float> c1 = accumulate ? Vector128.Load(cr + 4) : Vector128<float>.Zero;
                for (int p = 0; p < k; p++)
                {
                    Vector128<float> x = Vector128.Create(ar[p]);
                    c0 = Vector128.MultiplyAddEstimate(x, Vector128.Load(bp), c0);
                    c1 = Vector128.MultiplyAddEstimate(x, Vector128.Load(bp + 4), c1);
                    bp += ldb;
                }

                c0.Store(cr);
                c1.Store(cr + 4);
            }
        }
    }

    private static void Block4x8x128(float* a, int lda, float* b, int ldb, float* c, int ldc, int k, bool accumulate)
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
            Vector128<float> b0 = Vector128.Load(b);
            Vector128<float> b1 = Vector128.Load(b + 4);
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
