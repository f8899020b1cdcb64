using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LongCluster.Kernels;

/// <summary>
/// 2^x for the softmax. The kernels fold log2(e) into the query scale so softmax needs exp2 only. Vector forms:
/// split x = n + f with f in [−0.5, 0.5], a degree-6 polynomial for 2^f (Cephes exp2f coefficients, relative
/// error about 2e−7) and 2^n built in the exponent bits. Inputs are clamped to [−127, 127]; −∞ gives exactly 0.
/// Every vector width runs the same operations per lane, so Vector512, Vector256 and Vector128 agree bit for bit.
/// n is a whole number in [−127, 128], so the processor's truncating conversion (<c>ConvertToInt32Native</c>, one
/// <c>vcvttps2dq</c>) is exact; <c>ConvertToInt32</c> adds a saturation fix-up of three more instructions per vector.
/// </summary>
internal static class Exp2
{
    private const float P0 = 1.535336188319500e-4f;
    private const float P1 = 1.339887440266574e-3f;
    private const float P2 = 9.618437357674640e-3f;
    private const float P3 = 5.550332471162809e-2f;
    private const float P4 = 2.402264791363012e-1f;
    private const float P5 = 6.931472028550421e-1f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Scalar(float x) => float.Exp2(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Vector(Vector512<float> x)
    {
        x = Vector512.Min(Vector512.Max(x, Vector512.Create(-127f)), Vector512.Create(127f));
        Vector512<float> n = Vector512.Floor(x + Vector512.Create(0.5f));
        Vector512<float> f = x - n;
        Vector512<float> p = Vector512.Create(P0);
        p = Vector512.MultiplyAddEstimate(p, f, Vector512.Create(P1));
        p = Vector512.MultiplyAddEstimate(p, f, Vector512.Create(P2));
        p = Vector512.MultiplyAddEstimate(p, f, Vector512.Create(P3));
        p = Vector512.MultiplyAddEstimate(p, f, Vector512.Create(P4));
        p = Vector512.MultiplyAddEstimate(p, f, Vector512.Create(P5));
        p = Vector512.MultiplyAddEstimate(p, f, Vector512<float>.One);
        Vector512<int> exponent = Vector512.ShiftLeft(Vector512.ConvertToInt32Native(n) + Vector512.Create(127), 23);
        return p * exponent.AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Vector(Vector256<float> x)
    {
        x = Vector256.Min(Vector256.Max(x, Vector256.Create(-127f)), Vector256.Create(127f));
        Vector256<float> n = Vector256.Floor(x + Vector256.Create(0.5f));
        Vector256<float> f = x - n;
        Vector256<float> p = Vector256.Create(P0);
        p = Vector256.MultiplyAddEstimate(p, f, Vector256.Create(P1));
        p = Vector256.MultiplyAddEstimate(p, f, Vector256.Create(P2));
        p = Vector256.MultiplyAddEstimate(p, f, Vector256.Create(P3));
        p = Vector256.MultiplyAddEstimate(p, f, Vector256.Create(P4));
        p = Vector256.MultiplyAddEstimate(p, f, Vector256.Create(P5));
        p = Vector256.MultiplyAddEstimate(p, f, Vector256<float>.One);
        Vector256<int> exponent = Vector256.ShiftLeft(Vector256.ConvertToInt32Native(n) + Vector256.Create(127), 23);
        return p * exponent.AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Vector(Vector128<float> x)
    {
        x = Vector128.Min(Vector128.Max(x, Vector128.Create(-127f)), Vector128.Create(127f));
        Vector128<float> n = Vector128.Floor(x + Vector128.Create(0.5f));
        Vector128<float> f = x - n;
        Vector128<float> p = Vector128.Create(P0);
        p = Vector128.MultiplyAddEstimate(p, f, Vector128.Create(P1));
        p = Vector128.MultiplyAddEstimate(p, f, Vector128.Create(P2));
        p = Vector128.MultiplyAddEstimate(p, f, Vector128.Create(P3));
        p = Vector128.MultiplyAddEstimate(p, f, Vector128.Create(P4));
        p = Vector128.MultiplyAddEstimate(p, f, Vector128.Create(P5));
        p = Vector128.MultiplyAddEstimate(p, f, Vector128<float>.One);
        Vector128<int> exponent = Vector128.ShiftLeft(Vector128.ConvertToInt32Native(n) + Vector128.Create(127), 23);
        return p * exponent.AsSingle();
    }
}
