import { createHmac, timingSafeEqual } from "node:crypto";
import { InvalidArgumentError } from "../tokens/errors";
import type { TokenOwner } from "../tokens/repository";

const TOKEN_PATTERN = /^([1-9][0-9]{0,18})\.([A-Za-z0-9_-]{43})$/;

function invalidPageToken(): InvalidArgumentError {
  return new InvalidArgumentError([
    {
      field: "page_token",
      description:
        "page_token is invalid: send the next_page_token of the previous " +
        "page for the same user_id and org_id, or leave it empty",
    },
  ]);
}

/**
 * Encodes and checks ListAuditEvents page tokens: base64url of the last
 * event id and an HMAC-SHA256 over the owner and that id. The MAC makes a
 * token made up by a client, or one made for another owner, fail.
 */
export class PageTokenCodec {
  private readonly key: Buffer;

  /** Derives the MAC key from the signing secret, for this use only. */
  constructor(signingSecret: Buffer) {
    this.key = createHmac("sha256", signingSecret)
      .update("token.v1 audit event page token")
      .digest();
  }

  /** Encodes the cursor after the event with id `lastId`. */
  encode(owner: TokenOwner, lastId: string): string {
    const text = `${lastId}.${this.mac(owner, lastId)}`;
    return Buffer.from(text, "utf8").toString("base64url");
  }

  /**
   * Returns the last event id of a page token.
   *
   * @throws InvalidArgumentError naming page_token when the token is
   *   garbled, altered or made for another owner.
   */
  decode(owner: TokenOwner, pageToken: string): string {
    const text = Buffer.from(pageToken, "base64url").toString("utf8");
    const match = TOKEN_PATTERN.exec(text);
    if (!match) {
      throw invalidPageToken();
    }

    const [, lastId, mac] = match;
    const expected = Buffer.from(this.mac(owner, lastId), "utf8");
    const actual = Buffer.from(mac, "utf8");
    if (!timingSafeEqual(expected, actual)) {
      throw invalidPageToken();
    }
    return lastId;
  }

  private mac(owner: TokenOwner, lastId: string): string {
    return createHmac("sha256", this.key)
      .update(`${owner.userId}\0${owner.orgId}\0${lastId}`, "utf8")
      .digest("base64url");
  }
}
