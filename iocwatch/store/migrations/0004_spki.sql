-- Schema version 4: certificates by public key (SHA-256 of the SubjectPublicKeyInfo, the
-- pubkey_sha256 column), for key reuse across certificates (--alert-on key-reuse, /spki/).
-- Rows written before it keep their value; one whose key the strict decoder refused (NULL)
-- gets it the next time the certificate is seen.
CREATE INDEX IF NOT EXISTS certificates_pubkey_sha256 ON certificates (pubkey_sha256);
