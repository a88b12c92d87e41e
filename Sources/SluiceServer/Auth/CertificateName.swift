import SwiftASN1

/// The subject common name (CN) of a client certificate, which `auth.certificates` maps to an
/// identity. Read with SwiftASN1 from the certificate's DER: `Certificate ::= SEQUENCE {
/// tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, validity,
/// subject, … } … }`, the subject a SEQUENCE of SETs of `{type OID, value}`.
enum CertificateName {
    static let commonNameOID: ASN1ObjectIdentifier = [2, 5, 4, 3]

    /// The subject's last CN, nil when the bytes are not a certificate or it has none.
    static func commonName(der: [UInt8]) -> String? {
        guard let certificate = try? DER.parse(der), case .constructed(let parts) = certificate.content,
              let tbs = parts.first(where: { _ in true }), case .constructed(let fields) = tbs.content else { return nil }
        // Skip the explicit [0] version when present: then serial, signature, issuer, validity, subject.
        let list = Array(fields)
        let start = list.first?.identifier.tagClass == .contextSpecific ? 1 : 0
        guard list.count > start + 4 else { return nil }
        let subject = list[start + 4]
        guard case .constructed(let sets) = subject.content else { return nil }
        var name: String?
        for set in sets {
            guard case .constructed(let attributes) = set.content else { continue }
            for attribute in attributes {
                guard case .constructed(let pair) = attribute.content else { continue }
                let items = Array(pair)
                guard items.count == 2, let oid = try? ASN1ObjectIdentifier(derEncoded: items[0]), oid == commonNameOID,
                      case .primitive(let bytes) = items[1].content else { continue }
                name = String(decoding: bytes, as: UTF8.self)
            }
        }
        return name
    }
}
