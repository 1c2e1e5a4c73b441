import { randomBytes } from "node:crypto";
import { expect } from "chai";
import { SecretCipher, SecretDecryptionError } from "../src/tokens/cipher";
import {
  generateSecret,
  hashSecret,
  isLegacyFormat,
  maskSecret,
  signSecret,
  verifySignature,
} from "../src/tokens/secret";

describe("token secrets", () => {
  describe("generateSecret", () => {
    it("makes 1,000 distinct well-formed tokens", () => {
      const secrets = Array.from({ length: 1000 }, generateSecret);

      for (const secret of secrets) {
        expect(secret).to.match(/^vtk_[A-Za-z0-9_-]{43}$/);
        expect(secret).to.have.length(47);
      }
      expect(new Set(secrets).size).to.equal(1000);
    });
  });

  describe("hashSecret", () => {
    it("returns lowercase hex SHA-256", () => {
      // SHA-256 of "abc", from FIPS 180-2 appendix B.1.
      expect(hashSecret("abc")).to.equal(
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      );
    });
  });

  describe("maskSecret", () => {
    it("keeps the first 12 and last 4 characters", () => {
      const secret = "vtk_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
      expect(maskSecret(secret)).to.equal("vtk_abcdefgh...DEFG");
    });

    it("hides short secrets entirely", () => {
      expect(maskSecret("0123456789ab")).to.equal("****");
      expect(maskSecret("")).to.equal("****");
    });
  });

  describe("signatures", () => {
    const signingSecret = randomBytes(32);

    it("verify under the signing secret", () => {
      const secret = generateSecret();
      const signature = signSecret(secret, signingSecret);

      expect(signature).to.match(/^sig_[0-9a-f]{64}$/);
      expect(verifySignature(secret, signature, signingSecret)).to.equal(true);
    });

    it("fail for another secret or key", () => {
      const secret = generateSecret();
      const signature = signSecret(secret, signingSecret);

      expect(
        verifySignature(generateSecret(), signature, signingSecret),
      ).to.equal(false);
      expect(verifySignature(secret, signature, randomBytes(32))).to.equal(
        false,
      );
      expect(verifySignature(secret, "sig_00", signingSecret)).to.equal(false);
    });
  });

  describe("isLegacyFormat", () => {
    it("accepts only 32 lowercase hex characters", () => {
      expect(isLegacyFormat("0123456789abcdef0123456789abcdef")).to.equal(true);
      expect(isLegacyFormat("0123456789ABCDEF0123456789ABCDEF")).to.equal(
        false,
      );
      expect(isLegacyFormat("0123456789abcdef")).to.equal(false);
    });
  });

  describe("SecretCipher", () => {
    const current = { id: "k2", key: randomBytes(32) };
    const retired = { id: "k1", key: randomBytes(32) };

    it("opens what it sealed", () => {
      const cipher = new SecretCipher(current);
      const secret = generateSecret();

      const sealed = cipher.seal(secret, "token-1");

      expect(sealed.keyId).to.equal("k2");
      expect(sealed.ciphertext.includes(Buffer.from(secret))).to.equal(false);
      expect(cipher.open(sealed, "token-1")).to.equal(secret);
    });

    it("opens secrets sealed under a retired key", () => {
      const sealed = new SecretCipher(retired).seal("legacy", "token-1");

      const rotated = new SecretCipher(current, [retired]);

      expect(rotated.open(sealed, "token-1")).to.equal("legacy");
    });

    it("rejects a ciphertext moved to another token", () => {
      const cipher = new SecretCipher(current);
      const sealed = cipher.seal(generateSecret(), "token-1");

      expect(() => cipher.open(sealed, "token-2")).to.throw(
        SecretDecryptionError,
      );
    });

    it("rejects an altered ciphertext", () => {
      const cipher = new SecretCipher(current);
      const sealed = cipher.seal(generateSecret(), "token-1");
      sealed.ciphertext[sealed.ciphertext.length - 1] ^= 1;

      expect(() => cipher.open(sealed, "token-1")).to.throw(
        SecretDecryptionError,
      );
    });

    it("names an unknown key id", () => {
      const sealed = new SecretCipher(retired).seal("x", "token-1");

      expect(() => new SecretCipher(current).open(sealed, "token-1")).to.throw(
        /k1.*TOKEN_RETIRED_KEYS/,
      );
    });
  });
});
