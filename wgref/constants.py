"""Protocol constants, sizes and timers (WP 5.4, WP 6.1; kernel drivers/net/wireguard/messages.h).

Where the whitepaper and implementations differ, the kernel's value is used and cited.
"""

from typing import Final

# WP 5.4: protocol strings.
CONSTRUCTION: Final = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER: Final = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1: Final = b"mac1----"
LABEL_COOKIE: Final = b"cookie--"

# Sizes in bytes.
KEY_LEN: Final = 32
HASH_LEN: Final = 32
MAC_LEN: Final = 16
TAG_LEN: Final = 16
TAI64N_LEN: Final = 12
COOKIE_LEN: Final = 16
COOKIE_NONCE_LEN: Final = 24

# WP 5.4.2-5.4.7: message types and exact sizes.
MESSAGE_INITIATION: Final = 1
MESSAGE_RESPONSE: Final = 2
MESSAGE_COOKIE_REPLY: Final = 3
MESSAGE_TRANSPORT: Final = 4
INITIATION_SIZE: Final = 148
RESPONSE_SIZE: Final = 92
COOKIE_REPLY_SIZE: Final = 64
TRANSPORT_HEADER_SIZE: Final = 16
TRANSPORT_MIN_SIZE: Final = TRANSPORT_HEADER_SIZE + TAG_LEN  # a keepalive: 32 bytes

# WP 6.1: timers (seconds) and message limits.
REKEY_AFTER_MESSAGES: Final = 1 << 60
# WP 6.1 says 2^64 - 2^13 - 1 (wireguard-go uses that); the kernel uses
# U64_MAX - COUNTER_WINDOW_SIZE - 1 = 2^64 - 8130 on 64-bit (messages.h), and accepts counters
# up to that (a probe against Debian's kernel confirms it). wgref follows the kernel.
COUNTER_WINDOW_SIZE_KERNEL: Final = 8192 - 64
REJECT_AFTER_MESSAGES: Final = (1 << 64) - 1 - COUNTER_WINDOW_SIZE_KERNEL - 1
REKEY_AFTER_TIME: Final = 120.0
REJECT_AFTER_TIME: Final = 180.0
REKEY_ATTEMPT_TIME: Final = 90.0
REKEY_TIMEOUT: Final = 5.0
KEEPALIVE_TIMEOUT: Final = 10.0
# Kernel timers.c: jitter drawn in [0, HZ/3); wireguard-go: [0, 333] ms.
REKEY_TIMEOUT_JITTER_MAX: Final = 1.0 / 3.0
# Kernel: MAX_TIMER_HANDSHAKES = 90 / REKEY_TIMEOUT.
MAX_TIMER_HANDSHAKES: Final = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)
# WP 6.3: zero all ephemeral state after REJECT_AFTER_TIME * 3.
ZERO_KEYS_AFTER: Final = REJECT_AFTER_TIME * 3

# WP 5.4.7, kernel cookie.c: COOKIE_SECRET_MAX_AGE, COOKIE_SECRET_LATENCY.
COOKIE_SECRET_MAX_AGE: Final = 120.0
COOKIE_SECRET_LATENCY: Final = 5.0

# Kernel noise.c: INITIATIONS_PER_SECOND = 50 (flood check: >= 20 ms apart per peer).
INITIATIONS_PER_SECOND: Final = 50
# Kernel ratelimiter.c: PACKETS_PER_SECOND, PACKETS_BURSTABLE.
RATELIMIT_PACKETS_PER_SECOND: Final = 20
RATELIMIT_BURST: Final = 5
# Kernel receive.c: under load when the handshake queue holds >= MAX_QUEUED_INCOMING_HANDSHAKES/8,
# and for 1 s afterwards.
MAX_QUEUED_INCOMING_HANDSHAKES: Final = 4096
UNDER_LOAD_THRESHOLD: Final = MAX_QUEUED_INCOMING_HANDSHAKES // 8
UNDER_LOAD_AFTER_TIME: Final = 1.0

# WP 5.4.6; kernel send.c MESSAGE_PADDING_MULTIPLE.
PADDING_MULTIPLE: Final = 16
DEFAULT_MTU: Final = 1420

# Kernel queueing.h: MAX_STAGED_PACKETS (packets queued for a peer while it handshakes).
MAX_STAGED_PACKETS: Final = 128
