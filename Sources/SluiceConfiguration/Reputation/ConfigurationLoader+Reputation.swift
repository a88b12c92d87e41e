import Foundation
import SluiceCore
import SluiceIntelligence
import Yams

extension Reader {
    /// `reputation:` the model (neutral, half-life, weights, curve, block threshold) and its bounds.
    func readReputation(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var settings = configuration.reputation
        let keys: Set = ["neutral", "half_life", "block_below", "weights", "curve", "record_denials", "max_subjects", "sweep_interval"]
        for (key, value) in try mapping(node, "reputation", keys: keys) {
            let path = "reputation.\(key)"
            switch key {
            case "neutral": settings.model.neutral = try number(value, path, ReputationModel.range)
            case "half_life": settings.model.halfLife = try duration(value, path)
            case "block_below":
                let threshold = try number(value, path, ReputationModel.range)
                settings.model.blockBelow = threshold > 0 ? threshold : nil
            case "record_denials": settings.recordDenials = try bool(value, path)
            case "max_subjects": settings.maxSubjects = try integer(value, path, 1...100_000_000)
            case "sweep_interval":
                settings.sweepInterval = try duration(value, path)
                guard settings.sweepInterval >= 100_000_000 else { throw error(value, path, "expected at least 100ms") }
            case "weights":
                var weights = ReputationModel.builtInWeights
                for (kind, weightNode) in try mapping(value, path, keys: nil) {
                    guard Self.isKindName(kind) else {
                        throw error(weightNode, "\(path).\(kind)", "an event kind is 1 to 64 of a-z, 0-9 and _")
                    }
                    weights[kind] = try number(weightNode, "\(path).\(kind)", -100...100)
                }
                settings.model.weights = weights
            default: settings.model.curve = try readCurve(value, path)
            }
        }
        if let threshold = settings.model.blockBelow, threshold >= settings.model.neutral {
            throw error(node, "reputation.block_below", "must be below neutral (\(settings.model.neutral)), or every new subject would be blocked")
        }
        configuration.reputation = settings
    }

    static func isKindName(_ kind: String) -> Bool {
        !kind.isEmpty && kind.utf8.count <= 64 && kind.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }
    }

    func readCurve(_ node: Node, _ path: String) throws(SluiceError) -> MultiplierCurve {
        var interpolation = MultiplierCurve.Interpolation.linear
        var points: [MultiplierCurve.Point] = []
        var pointsNode: Node?
        for (key, value) in try mapping(node, path, keys: ["interpolation", "points"]) {
            if key == "interpolation" {
                let text = try string(value, "\(path).interpolation")
                guard let mode = MultiplierCurve.Interpolation(rawValue: text) else {
                    throw error(value, "\(path).interpolation", "expected linear or step, got '\(text)'")
                }
                interpolation = mode
            } else {
                pointsNode = value
                for (index, item) in try sequence(value, "\(path).points").enumerated() {
                    let itemPath = "\(path).points[\(index)]"
                    var score: Double?, multiplier: Double?
                    for (k, v) in try mapping(item, itemPath, keys: ["score", "multiplier"]) {
                        if k == "score" {
                            score = try number(v, "\(itemPath).score", ReputationModel.range)
                        } else {
                            multiplier = try number(v, "\(itemPath).multiplier", 0.001...1_000)
                        }
                    }
                    guard let score, let multiplier else { throw error(item, itemPath, "expected score and multiplier") }
                    points.append(.init(score: score, multiplier: multiplier))
                }
            }
        }
        guard let pointsNode else { throw error(node, "\(path).points", "required: a list of { score, multiplier }") }
        do {
            return try MultiplierCurve(points: points, interpolation: interpolation)
        } catch {
            throw self.error(pointsNode, "\(path).points", error.message)
        }
    }
}
