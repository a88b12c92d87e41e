/// A reference to an object that its owner keeps alive for longer than any call made through it:
/// how the check path calls an object held in a property without a retain and a release.
///
/// Swift retains a class reference loaded from a property around each call it is passed to;
/// on a one-check request a stage paid one pair (about 40 instructions) for each book and table
/// it called (callgrind, docs/BENCHMARKS.md). The owner must hold a strong reference too.
@frozen
public struct Borrowed<Object: AnyObject>: @unchecked Sendable {
    @usableFromInline let reference: Unmanaged<Object>

    /// Borrows `object`; the caller keeps it alive while this is used.
    @inlinable @inline(__always)
    public init(_ object: Object) { reference = .passUnretained(object) }

    /// Runs `body` with the object, retaining nothing.
    @inlinable @inline(__always)
    public func callAsFunction<Result>(_ body: (Object) -> Result) -> Result {
        reference._withUnsafeGuaranteedRef(body)
    }
}
