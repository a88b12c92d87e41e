import Foundation

// An online, unsupervised model of what a subject's minute looks like (docs/ANOMALY.md, "The
// model"): half-space trees (Tan, Ting and Liu, "Fast anomaly detection for streaming data",
// IJCAI 2011). Each tree cuts the unit cube of features in half, dimension by dimension, at
// random; a minute is scored by how much mass the last window put where it falls, deep in the
// tree where that is cheap: a minute in a region where few minutes were is an outlier. It learns
// in windows of `window` minutes, the last full one scoring while the current one fills, so it
// follows the traffic without ever storing a sample. Fixed memory (trees × 2^(depth+1) nodes),
// O(trees × depth) a minute, deterministic (its own seeded generator).
//
// No library in the mirror provides one; it is a page of arithmetic, tested on data whose
// outliers are known.

/// Half-space trees over feature vectors in [0, 1]^dimensions.
public struct HalfSpaceTrees: Sendable {
    public let trees: Int
    public let depth: Int
    public let dimensions: Int
    /// Minutes per window: the mass of the last full window scores.
    public let window: Int
    /// A node with less mass than this ends a minute's descent (a tenth of a window).
    let sizeLimit: Float
    /// Per node, in each tree's breadth-first order: the dimension it cuts and where.
    var splitDimension: [UInt8]
    var splitValue: [Float]
    /// Per node: the mass of the last full window (reference) and of the current one.
    var reference: [Float]
    var latest: [Float]
    var filled = 0
    /// Whether a full window has been learned (before that nothing scores).
    public private(set) var ready = false

    var nodesPerTree: Int { (1 << (depth + 1)) - 1 }

    public init(dimensions: Int, trees: Int = 25, depth: Int = 8, window: Int = 1_000, seed: UInt64 = 0x5EED) {
        self.dimensions = max(1, min(dimensions, 255))
        self.trees = max(1, trees)
        self.depth = max(1, min(depth, 16))
        self.window = max(16, window)
        sizeLimit = Float(self.window) / 10
        let nodes = self.trees * ((1 << (self.depth + 1)) - 1)
        splitDimension = Array(repeating: 0, count: nodes)
        splitValue = Array(repeating: 0, count: nodes)
        reference = Array(repeating: 0, count: nodes)
        latest = Array(repeating: 0, count: nodes)
        var random = seed
        func next() -> Double {
            random &+= 0x9E37_79B9_7F4A_7C15
            var z = random
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
        }
        for tree in 0..<self.trees {
            // Each tree's work space: around a random point, twice as wide as the cube, so the
            // cuts fall at different places in different trees.
            var low = [Double](repeating: 0, count: self.dimensions)
            var high = [Double](repeating: 0, count: self.dimensions)
            for dimension in 0..<self.dimensions {
                let point = next()
                let range = 2 * max(point, 1 - point)
                low[dimension] = point - range
                high[dimension] = point + range
            }
            build(tree * nodesPerTree, node: 0, level: 0, low: &low, high: &high, next: next)
        }
    }

    private mutating func build(_ base: Int, node: Int, level: Int, low: inout [Double], high: inout [Double], next: () -> Double) {
        guard level < depth else { return }
        let dimension = min(dimensions - 1, Int(next() * Double(dimensions)))
        let middle = (low[dimension] + high[dimension]) / 2
        splitDimension[base + node] = UInt8(dimension)
        splitValue[base + node] = Float(middle)
        let savedHigh = high[dimension]
        high[dimension] = middle
        build(base, node: 2 * node + 1, level: level + 1, low: &low, high: &high, next: next)
        high[dimension] = savedHigh
        let savedLow = low[dimension]
        low[dimension] = middle
        build(base, node: 2 * node + 2, level: level + 1, low: &low, high: &high, next: next)
        low[dimension] = savedLow
    }

    /// How normal `features` are (0: nowhere the last window went; larger is more normal), or
    /// nil before a full window was learned.
    public func score(_ features: [Float]) -> Double? {
        guard ready, features.count >= dimensions else { return nil }
        var total = 0.0
        for tree in 0..<trees {
            let base = tree * nodesPerTree
            var node = 0
            var level = 0
            while true {
                let mass = reference[base + node]
                if level == depth || mass <= sizeLimit {
                    total += Double(mass) * Double(1 << level)
                    break
                }
                node = features[Int(splitDimension[base + node])] < splitValue[base + node] ? 2 * node + 1 : 2 * node + 2
                level += 1
            }
        }
        return total
    }

    /// The highest score a minute can have: every tree's whole window at its deepest node.
    public var ceiling: Double { Double(trees) * Double(window) * Double(1 << depth) }

    /// Learns `features` into the current window; a full window becomes the reference.
    public mutating func learn(_ features: [Float]) {
        guard features.count >= dimensions else { return }
        for tree in 0..<trees {
            let base = tree * nodesPerTree
            var node = 0
            for _ in 0...depth {
                latest[base + node] += 1
                guard node < nodesPerTree / 2 else { break }
                node = features[Int(splitDimension[base + node])] < splitValue[base + node] ? 2 * node + 1 : 2 * node + 2
            }
        }
        filled += 1
        if filled >= window {
            swap(&reference, &latest)
            for index in latest.indices { latest[index] = 0 }
            filled = 0
            ready = true
        }
    }

    /// Bytes of nodes.
    public var bytes: Int { splitDimension.count * (1 + 4 + 4 + 4) }
}
