import SluiceCore
import SluiceTestKit
import Testing
@testable import SluiceIntelligence

/// The pieces a surge's response is made of: prefix keys that agree however an address is
/// written, a Bloom filter with no false "no", and keys the check path computes from bytes
/// exactly as the detector does from strings.
@Suite(.computes) struct SurgeGuardTests {
    @Test func aPrefixKeyIsTheSameForEveryAddressInItAndForItsName() throws {
        let v4 = try #require(AnomalyDetector.prefixKey("203.0.113.7"))
        #expect(AnomalyDetector.prefixKey("203.0.113.250") == v4)
        #expect(AnomalyDetector.prefixKey("203.0.113.0/24") == v4)
        #expect(AnomalyDetector.prefixKey("203.0.114.7") != v4)
        let v6 = try #require(AnomalyDetector.prefixKey("2001:db8:66:12::1"))
        #expect(AnomalyDetector.prefixKey("2001:0DB8:0066:ffff:1:2:3:4") == v6)
        #expect(AnomalyDetector.prefixKey("2001:db8:66::/48") == v6)
        #expect(AnomalyDetector.prefixKey("2001:db8:67::1") != v6)
        // A gap inside the first three groups: the rest are zeros, as the surge's shape names it.
        #expect(AnomalyDetector.prefixKey("2001::1") == AnomalyDetector.prefixKey(SurgeShape.prefix("2001::1")))
        #expect(AnomalyDetector.prefixKey("2001:db8:66:12::1") == AnomalyDetector.prefixKey(SurgeShape.prefix("2001:db8:66:12::1")))
        for junk in ["", "localhost", "1.2", "300.1.1.1", "12345::1", "1.2.3"] {
            #expect(AnomalyDetector.prefixKey(junk) == nil, "\(junk)")
        }
    }

    @Test func aBloomFilterNeverForgetsAndRarelyImagines() {
        var filter = BloomFilter(count: 10_000, falsePositiveRate: 0.01)
        var random = SeededGenerator(seed: 7)
        let added = (0..<10_000).map { _ in random.next() }
        for key in added { filter.insert(key) }
        #expect(added.allSatisfy(filter.contains))
        let imagined = (0..<100_000).count { _ in filter.contains(random.next()) }
        #expect(imagined < 2_000, "\(imagined) false positives in 100,000")
    }

    @Test func checksComputeTheDetectorsKeysFromBytes() {
        func bytes(_ text: String, _ body: (UnsafeRawBufferPointer) -> UInt64) -> UInt64 {
            var text = text
            return text.withUTF8 { body(UnsafeRawBufferPointer($0)) }
        }
        let event = CheckEvent(timestampMs: 0, tenant: "shop", subject: "alice", ip: "192.0.2.1", route: "GET /", status: 200, cost: 1)
        let subject = bytes("shop") { tenant in bytes("alice") { AnomalyDetector.subjectKey(tenant: tenant, subject: $0) } }
        #expect(subject == AnomalyDetector.subjectKey(event))
        var plain = event
        plain.tenant = ""
        #expect(bytes("") { tenant in bytes("alice") { AnomalyDetector.subjectKey(tenant: tenant, subject: $0) } } == AnomalyDetector.subjectKey(plain))
        #expect(bytes("192.0.2.1") { AnomalyDetector.addressKey($0) } == AnomalyDetector.hash("192.0.2.1"))
    }
}
