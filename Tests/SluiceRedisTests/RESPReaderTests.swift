import NIOCore
import Testing
@testable import SluiceRedis

@Suite("RESP2 reader")
struct RESPReaderTests {
    func read(_ text: String, limits: RESPReader.Limits = RESPReader.Limits()) throws -> (RESPValue?, Int) {
        let bytes = Array(text.utf8)
        var position = 0
        let value = try bytes.withUnsafeBytes { raw in try RESPReader(limits: limits).read(raw, at: &position) }
        return (value, position)
    }

    @Test("every RESP2 type reads as what it is, nulls included")
    func types() throws {
        #expect(try read("+OK\r\n").0 == .simple("OK"))
        #expect(try read("-ERR unknown command\r\n").0 == .error("ERR unknown command"))
        #expect(try read(":42\r\n").0 == .integer(42))
        #expect(try read(":-7\r\n").0 == .integer(-7))
        #expect(try read(":9223372036854775807\r\n").0 == .integer(.max))
        #expect(try read("$5\r\nhello\r\n").0 == .bulk(Array("hello".utf8)))
        #expect(try read("$0\r\n\r\n").0 == .bulk([]))
        #expect(try read("$-1\r\n").0 == .bulk(nil))
        #expect(try read("*-1\r\n").0 == .array(nil))
        #expect(try read("*0\r\n").0 == .array([]))
        #expect(try read("$4\r\na\r\nb\r\n").0 == .bulk(Array("a\r\nb".utf8)), "a bulk string may hold CRLF")
        #expect(try read("*3\r\n:1\r\n*2\r\n+a\r\n$-1\r\n-E\r\n").0 == .array([.integer(1), .array([.simple("a"), .bulk(nil)]), .error("E")]))
    }

    @Test("a reply cut anywhere reads as not here yet, and leaves the position where it was")
    func splitAnywhere() throws {
        let whole = "*4\r\n:1\r\n$3\r\nabc\r\n*2\r\n+OK\r\n:-12\r\n$-1\r\n"
        let expected = RESPValue.array([.integer(1), .bulk(Array("abc".utf8)), .array([.simple("OK"), .integer(-12)]), .bulk(nil)])
        let bytes = Array(whole.utf8)
        for cut in 0..<bytes.count {
            var position = 0
            let value = try Array(bytes[0..<cut]).withUnsafeBytes { raw in try RESPReader().read(raw, at: &position) }
            #expect(value == nil, "cut at \(cut)")
            #expect(position == 0)
        }
        let (value, position) = try read(whole)
        #expect(value == expected)
        #expect(position == bytes.count)
    }

    @Test("replies back to back read one at a time, each moving the position past itself")
    func backToBack() throws {
        let bytes = Array("+PONG\r\n:3\r\n$2\r\nhi\r\n".utf8)
        var position = 0
        var values: [RESPValue] = []
        try bytes.withUnsafeBytes { raw in
            while let value = try RESPReader().read(raw, at: &position) { values.append(value) }
        }
        #expect(values == [.simple("PONG"), .integer(3), .bulk(Array("hi".utf8))])
        #expect(position == bytes.count)
    }

    @Test("bytes that are not RESP2 are refused with a stable code, whatever they claim",
          arguments: [
            ("HTTP/1.1 400 Bad Request\r\n", RESPError.Code.badType),
            ("$abc\r\n", .badNumber), ("$-2\r\n", .badNumber), ("*-5\r\n", .badNumber), (":\r\n", .badNumber),
            (":12a\r\n", .badNumber), (":99999999999999999999\r\n", .badNumber), (":9223372036854775808\r\n", .badNumber),
            ("$3\r\nabcXY", .badTerminator), ("+OK\rX", .badTerminator),
            ("$16777217\r\n", .tooLarge), ("*1048577\r\n", .tooLarge),
          ])
    func refused(text: String, code: RESPError.Code) {
        #expect(throws: RESPError.self) { try read(text) }
        do {
            _ = try read(text)
        } catch let error as RESPError {
            #expect(error.code == code, "\(text.debugDescription): \(error)")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test("limits: nesting, lines, bulk strings and arrays past them are refused before anything is allocated")
    func limits() throws {
        var limits = RESPReader.Limits()
        limits.depth = 3
        limits.lineBytes = 8
        limits.bulkBytes = 4
        limits.elements = 2
        #expect(try read("*1\r\n*1\r\n*1\r\n:1\r\n", limits: limits).0 == .array([.array([.array([.integer(1)])])]))
        #expect(throws: RESPError(.tooLarge, "arrays nested deeper than 3")) { try read("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", limits: limits) }
        #expect(throws: RESPError.self) { try read("+123456789\r\n", limits: limits) }
        #expect(throws: RESPError.self) { try read("+1234567890", limits: limits) }
        #expect(try read("+12345678", limits: limits).0 == nil, "a line within the limit may still be coming")
        #expect(throws: RESPError.self) { try read("$5\r\nhello\r\n", limits: limits) }
        #expect(throws: RESPError.self) { try read("*3\r\n:1\r\n:2\r\n:3\r\n", limits: limits) }
        // An array claiming more elements than could fit in what arrived waits for them, and
        // reserves nothing for them.
        #expect(try read("*1000000\r\n:1\r\n").0 == nil)
    }
}

@Suite("RESP2 commands")
struct RESPCommandTests {
    @Test("a command is an array of bulk strings, integers in decimal")
    func bytes() {
        #expect(RESPCommand("SET", "key", 42).bytes == Array("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$2\r\n42\r\n".utf8))
        #expect(RESPCommand("X", .integer(-7), .integer(0)).bytes == Array("*3\r\n$1\r\nX\r\n$2\r\n-7\r\n$1\r\n0\r\n".utf8))
        #expect(RESPCommand("X", .integer(.min)).bytes == Array("*2\r\n$1\r\nX\r\n$20\r\n-9223372036854775808\r\n".utf8))
        #expect(RESPCommand("GET", .bytes([0, 13, 10, 255])).bytes == [UInt8]("*2\r\n$3\r\nGET\r\n$4\r\n".utf8) + [0, 13, 10, 255, 13, 10])
        #expect(RESPCommand("GET", "é").bytes == Array("*2\r\n$3\r\nGET\r\n$2\r\né\r\n".utf8), "lengths count bytes, not characters")
    }

    @Test("what the command writer writes, the reply reader reads back as the same strings")
    func roundTrip() throws {
        let command = RESPCommand("EVALSHA", "abc", 1, "k{t}", .integer(-123456789012), .bytes(Array(repeating: 7, count: 300)))
        let bytes = command.bytes
        var position = 0
        let value = try bytes.withUnsafeBytes { raw in try RESPReader().read(raw, at: &position) }
        #expect(value == .array([.bulk(Array("EVALSHA".utf8)), .bulk(Array("abc".utf8)), .bulk(Array("1".utf8)), .bulk(Array("k{t}".utf8)),
                                 .bulk(Array("-123456789012".utf8)), .bulk(Array(repeating: 7, count: 300))]))
        #expect(position == bytes.count)
    }
}
