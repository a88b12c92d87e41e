import Foundation
@testable import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
@testable import SluiceServer
import Testing

@Suite("Reputation configuration")
struct ReputationConfigurationTests {
    func failure(_ yaml: String) -> String { ConfigurationTests.failure(yaml) }

    @Test("the embedded default keeps reputation in /tmp/sluice.db and rolls it out in shadow mode")
    func embeddedDefault() throws {
        let configuration = try ConfigurationLoader.embeddedDefault()
        #expect(configuration.store.path == "/tmp/sluice.db")
        #expect(configuration.store.commitInterval == 100_000_000)
        #expect(configuration.features["reputation"] == FeatureFlag(name: "reputation", enabled: true, rolloutPercent: 100, shadow: true))
        #expect(configuration.reputation.model == ReputationModel())
        // A file without the sections: reputation off, nothing stored.
        let empty = try ConfigurationLoader.parse("", source: "empty.yaml")
        #expect(empty.features.isEmpty)
        #expect(empty.store.path == nil)
        #expect(ReputationGate(empty) == nil)
    }

    @Test("every key is read: model, custom kinds, curve, store, flags")
    func fullFile() throws {
        let configuration = try ConfigurationLoader.parse("""
        reputation:
          neutral: 60
          half_life: 30m
          block_below: 0
          record_denials: false
          max_subjects: 5000
          sweep_interval: 2s
          weights: { auth_failure: -12.5, credential_stuffing: -40 }
          curve:
            interpolation: step
            points: [ { score: 0, multiplier: 0.1 }, { score: 60, multiplier: 1 }, { score: 90, multiplier: 3 } ]
        store: { path: /var/lib/sluice/sluice.db, commit_interval: 250ms, retention: 30d, max_events: 1000, busy_timeout: 2s }
        features:
          reputation: { enabled: true, rollout: 25%, shadow: false }
        """, source: "full.yaml")
        let model = configuration.reputation.model
        #expect(model.neutral == 60)
        #expect(model.halfLife == 1_800_000_000_000)
        #expect(model.blockBelow == nil)
        #expect(model.weights["credential_stuffing"] == -40)
        #expect(model.weights["auth_failure"] == -12.5)
        #expect(model.weights["captcha_passed"] == 20, "built-in kinds keep their defaults")
        #expect(model.curve.interpolation == .step)
        #expect(model.curve.multiplier(at: 89) == 1)
        #expect(!configuration.reputation.recordDenials)
        #expect(configuration.reputation.maxSubjects == 5_000)
        #expect(configuration.reputation.sweepInterval == 2_000_000_000)
        #expect(configuration.store.path == "/var/lib/sluice/sluice.db")
        #expect(configuration.store.commitInterval == 250_000_000)
        #expect(configuration.store.retention == 30 * 86_400_000_000_000)
        #expect(configuration.store.maxEvents == 1_000)
        #expect(configuration.features["reputation"]?.rolloutPercent == 25)
        let gate = try #require(ReputationGate(configuration))
        #expect(gate.neutralMultiplier == 1)
        #expect(!gate.shadow)
    }

    @Test("mistakes are named by line and key")
    func errors() {
        #expect(failure("reputation: { neutral: 150 }").contains("reputation.neutral: expected a number from 0.0 to 100.0"))
        #expect(failure("reputation: { neutral: 50, block_below: 60 }").contains("must be below neutral"))
        #expect(failure("reputation: { weights: { Bad-Kind: 1 } }").contains("an event kind is 1 to 64 of a-z, 0-9 and _"))
        #expect(failure("reputation: { weights: { spam: 500 } }").contains("reputation.weights.spam"))
        #expect(failure("reputation: { curve: { points: [ { score: 50, multiplier: 1 }, { score: 10, multiplier: 1 } ] } }")
            .contains("increasing order"))
        #expect(failure("reputation: { curve: { interpolation: cubic, points: [] } }").contains("expected linear or step"))
        #expect(failure("reputation: { curve: { interpolation: linear } }").contains("reputation.curve.points: required"))
        #expect(failure("reputation: { half_lfe: 1h }").contains("reputation.half_lfe: unknown key"))
        #expect(failure("store: { commit_interval: 1m }").contains("store.commit_interval: expected at most 10s"))
        #expect(failure("features: { reputation: { rollout: 120 } }").contains("expected a percentage from 0 to 100"))
        #expect(failure("features: { telepathy: { enabled: true } }").contains("features.telepathy: unknown key; expected one of adaptive, anomaly, reputation"))
        #expect(failure("reputation:\n  sweep_interval: 10ms\n").contains("sluice.yaml:2:19: reputation.sweep_interval: expected at least 100ms"))
    }

    @Test("a reload applies the model and flags at once; the store needs a restart")
    func reload() throws {
        let running = try ConfigurationLoader.parse("store: { path: /a.db }\nfeatures: { reputation: { rollout: 5 } }", source: "a.yaml")
        let loaded = try ConfigurationLoader.parse("""
        store: { path: /b.db }
        reputation: { half_life: 5m }
        features: { reputation: { rollout: 50, shadow: true } }
        """, source: "a.yaml")
        let (applied, report) = running.reloadPlan(applying: loaded)
        #expect(report.needsRestart == ["store"])
        #expect(applied.store.path == "/a.db")
        #expect(applied.features["reputation"]?.rolloutPercent == 50)
        #expect(applied.reputation.model.halfLife == 300_000_000_000)
    }
}
