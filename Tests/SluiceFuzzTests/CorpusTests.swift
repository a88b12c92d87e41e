import Foundation
import SluiceFuzzTargets
import SluiceTestKit
import Testing

/// Every input of the checked-in corpora, and every seed, through its fuzz target: an input
/// that once crashed a target or failed one of its properties stays a regression test, in the
/// plain build the suite runs (the fuzzing build is scripts/fuzz.sh).
@Suite(.computes) struct CorpusTests {
    static var corpus: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.appendingPathComponent("Fuzz/corpus").path
    }

    @Test(arguments: FuzzTarget.allCases)
    func everyCheckedInInputPasses(target: FuzzTarget) throws {
        let files = try SeedCorpus.files(["\(Self.corpus)/\(target.rawValue)"])
        #expect(!files.isEmpty, "no corpus for \(target.rawValue)")
        for path in files {
            let bytes = [UInt8](FileManager.default.contents(atPath: path) ?? Data())
            let failure = target.run(bytes)
            #expect(failure == nil, "\(path): \(failure ?? "")")
        }
    }

    @Test(arguments: FuzzTarget.allCases)
    func everySeedPasses(target: FuzzTarget) {
        let seeds = SeedCorpus.inputs()[target] ?? []
        #expect(!seeds.isEmpty)
        for seed in seeds {
            let failure = target.run(seed.bytes)
            #expect(failure == nil, "\(seed.name): \(failure ?? "")")
        }
    }
}
