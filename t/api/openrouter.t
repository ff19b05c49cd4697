# OpenRouter in one click (issue 3): POST M/openrouter/authorize and
# M/openrouter/exchange against the loopback mock of OpenRouter
# (t/mock/upstream.pl, started by t/TEST.PL; see t/mock/README.md).
#
# - authorize: the answer's shape and authUrl, bad callbackUrls, the state row
#   (only the hash of the state, the verifier encrypted);
# - the full flow with state: the browser follows authUrl to the mock, comes
#   back with a code, and the server trades it with the verifier it kept;
#   single use, bound to the user, expiry, a second flow replaces the key;
# - the seed's flow, with the browser's own verifier (S256 and plain);
# - every way OpenRouter can fail (refusal, expired code, 500, garbage, no or a
#   bad key, a huge answer, slowness, a closed port): 400
#   OAUTH_EXCHANGE_FAILED, and never a row created or changed;
# - what reached the mock, and that no key, verifier, code or state is in a
#   response or in the error log.
#
# Secrets (issued keys, verifiers, codes, states) are compared with ok(), never
# with is()/like(), so a failure does not print them.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use lib 't/lib', 't/fixtures';
use AiprovTest qw(:DEFAULT t_dir);
use ApiAssert;
use Digest::SHA qw(sha256);
use JSON::PP ();
use LWP::UserAgent ();
use MIME::Base64 qw(encode_base64url decode_base64);
use Time::HiRes ();
use URI ();

reset_db();
db()->do('DELETE FROM ai_provider_oauth_state');
mock_reset();

my $T         = t_dir();
my $AUTHZ     = M . '/openrouter/authorize';
my $EXCH      = M . '/openrouter/exchange';
my $EXCH_PATH = '/api/v1/auth/keys';          # the mock's code-for-key endpoint
my $CALLBACK  = 'https://app.example/cb?x=1';
my $UNRESERVED = join '', 'A' .. 'Z', 'a' .. 'z', '0' .. '9', '-', '.', '_', '~';

my ($NODE) = grep { -x } map { "$_/node" } split /:/, $ENV{PATH} // '';

# ---------------------------------------------------------------- helpers
my @BODIES;                 # every response body of this file
my (%CODES, %VERIFIERS, %STATES);    # everything secret this file saw or made

# api() that remembers the body, for the secrets check at the end
sub call {
    my ($res, $data) = api(@_);
    push @BODIES, $res->content // '';
    ($res, $data);
}

sub state_hash { sha256_hex($_[0]) }

sub state_rows {
    my $at = backend() eq 'pgsql' ? 'CAST(extract(epoch FROM expires_at) AS BIGINT)' : 'expires_at';
    db()->selectall_arrayref("SELECT state_hash, user_id, code_verifier, callback_url,
                                     $at AS expires_epoch FROM ai_provider_oauth_state
                              ORDER BY state_hash", { Slice => {} });
}
sub state_row { my $h = shift; (grep { $_->{state_hash} eq $h } @{ state_rows() })[0] }
sub count_states { scalar @{ state_rows() } }

sub expire_state {
    my $hash = shift;
    my $at = backend() eq 'pgsql' ? 'to_timestamp(?)' : '?';
    db()->do("UPDATE ai_provider_oauth_state SET expires_at = $at WHERE state_hash = ?",
             undef, time - 60, $hash);
}

# the exchanges that reached the mock
sub exchanges { [ grep { $_->{method} eq 'POST' && $_->{path} eq $EXCH_PATH } @{ mock_captured() } ] }
sub n_exchanges { scalar @{ exchanges() } }

sub rand_verifier {
    my $n = shift // 64;
    my @c = split //, $UNRESERVED;
    my @b = unpack 'C*', pack 'H*', rand_hex($n);
    join '', map { $c[$_ % @c] } @b;
}
sub s256 { encode_base64url(sha256($_[0])) }    # no padding

# A code at the mock for $verifier (the seed's flow, without /auth).
sub mock_code {
    my ($verifier, %o) = @_;
    my $method = $o{method} // 'S256';
    my $challenge = $method eq 'S256' ? s256($verifier) : $verifier;
    my $r = mock_post('/_mock/code', { challenge => $challenge, method => $method,
                                       behavior => $o{behavior} // 'ok' });
    die "mock did not make a code\n" unless ref $r eq 'HASH' && $r->{code};
    $CODES{ $r->{code} } = 1;
    $VERIFIERS{$verifier} = 1;
    $r->{code};
}

sub issued {
    my $code = shift;
    my $r = mock_get('/_mock/issued?code=' . $code);
    ref $r eq 'HASH' && defined $r->{key} ? $r : undef;
}

# authorize for $tok: ($res, $data)
sub authorize {
    my ($tok, $cb, $mount) = @_;
    my ($res, $d) = call(POST => ($mount // M) . '/openrouter/authorize', token => $tok,
                         json => { callbackUrl => $cb // $CALLBACK });
    $STATES{ $d->{state} } = 1 if ref $d eq 'HASH' && defined $d->{state} && !ref $d->{state};
    ($res, $d);
}

# The browser at OpenRouter: GET authUrl, not following the redirect.
my $BROWSER = LWP::UserAgent->new(max_redirect => 0, timeout => 30, env_proxy => 0);
sub follow {
    my $url = shift;
    my $res = $BROWSER->get($url);
    my $loc = $res->header('Location') // '';
    my %q = eval { URI->new($loc)->query_form };
    $CODES{ $q{code} } = 1 if defined $q{code};
    ($res, $loc, $q{code});
}

# authorize + follow: (state, code) ready for the exchange
sub authorized_code {
    my ($tok, $mount) = @_;
    my (undef, $d) = authorize($tok, undef, $mount);
    die "authorize failed\n" unless ref $d eq 'HASH' && $d->{authUrl} && $d->{state};
    my (undef, undef, $code) = follow($d->{authUrl});
    die "the mock gave no code\n" unless $code;
    ($d->{state}, $code);
}

sub exchange {
    my ($tok, $body, %o) = @_;
    call(POST => ($o{mount} // M) . '/openrouter/exchange', token => $tok, json => $body,
         headers => $o{headers} // {});
}

sub detail {
    my ($tok, $id) = @_;
    my ($res) = call(GET => M . "/$id", token => $tok);
    my $d = fresh($res);
    $res->code == 200 && ref $d eq 'HASH' ? $d->{provider} : undef;
}

sub openrouter_rows {
    my $user = shift;
    db()->selectall_arrayref("SELECT * FROM ai_provider WHERE user_id = ? AND provider = 'openrouter'",
                             { Slice => {} }, $user);
}

# the exchange succeeded: exactly {"success":true,"id":uuid}; the id or undef
sub exchange_ok {
    my ($res, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $d = fresh($res);
    my $ok = $res->code == 200 && ref $d eq 'HASH'
          && join(',', sort keys %$d) eq 'id,success'
          && JSON::PP::is_bool($d->{success}) && $d->{success}
          && defined $d->{id} && !ref $d->{id} && $d->{id} =~ UUID_RE;
    ok($ok, "$name: 200 {\"success\":true,\"id\":uuid}")
        or diag('got ' . $res->code . ' ' . substr($res->content // '', 0, 300));
    $ok ? $d->{id} : undef;
}

# the stored row of $id holds $key (by hash; key and ciphertext never printed)
sub row_holds_key {
    my ($id, $key, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $r = row($id) || {};
    subtest $name => sub {
        is $r->{key_hash}, sha256_hex($key), 'key_hash is the SHA-256 of the issued key';
        ok(defined $r->{api_key} && index($r->{api_key}, $key) < 0, 'api_key is not the plaintext');
        ok(defined $r->{api_key} && decode_base64($r->{api_key}) !~ /\Q$key\E/, 'nor its base64');
        SKIP: {
            skip 'node is not installed', 1 unless $NODE;
            is webcrypto_sha($r->{api_key}), sha256_hex($key), 'api_key decrypts (AES-GCM, the /api key) to the issued key';
        }
    };
}

sub webcrypto_sha {
    my $ct = shift;
    return undef unless defined $ct;
    open my $ph, '-|', $NODE, "$T/fixtures/webcrypto-decrypt.mjs", "$T/conf/aiprov.key", $ct
        or return undef;
    my $out = do { local $/; <$ph> } // '';
    close $ph;
    return undef if $?;
    chomp $out;
    $out;
}

my $alice = make_user('or-alice');
my $tok   = session($alice);
my $bob   = make_user('or-bob');
my $btok  = session($bob);

# ================================================================ authorize
my ($state, $auth_url, $challenge);
subtest 'authorize: 200 {authUrl, state}' => sub {
    my $states = count_states();
    my ($res, $d) = authorize($tok);
    is $res->code, 200, 'status 200';
    like $res->header('Content-Type') // '', qr{\Aapplication/json\b}i, 'JSON';
    no_store($res);
    $d = fresh($res);
    is_deeply field_set($d), [qw(authUrl state)], 'exactly {authUrl, state}';
    is jtype($d->{authUrl}), 'string', 'authUrl is a string';
    is jtype($d->{state}), 'string', 'state is a string';
    ($state, $auth_url) = ($d->{state} // '', $d->{authUrl} // '');
    ok(length $state >= 43, 'state has at least 43 characters (256 bits in base64url)')
        or diag('length ' . length $state);
    ok($state =~ /\A[A-Za-z0-9_-]+\z/, 'state is URL-safe (base64url): it rides in a query unencoded');

    my $base = mock_url('/auth');
    ok(index($auth_url, "$base?") == 0, "authUrl starts with AIProvOpenRouterAuthURL ($base?)")
        or diag("authUrl: $auth_url");
    my $u = URI->new($auth_url);
    my @pairs = $u->query_form;
    my %q = @pairs;
    is_deeply [ sort keys %q ], [qw(callback_url code_challenge code_challenge_method)],
        'query: exactly callback_url, code_challenge, code_challenge_method';
    is scalar(@pairs), 6, 'each of them once';
    ok(defined $q{callback_url} && $q{callback_url} eq "$CALLBACK&state=$state",
       'callback_url (decoded) is the callbackUrl plus &state=<state>');
    $challenge = $q{code_challenge} // '';
    like $challenge, qr/\A[A-Za-z0-9_-]{43}\z/, 'code_challenge: 43 base64url characters (SHA-256, no padding)';
    is $q{code_challenge_method}, 'S256', 'code_challenge_method=S256';
    # callback_url percent-encoded as a whole: its & and = do not split the query
    unlike $u->query // '', qr/(?:^|&)(?:x|state)=/, "the callback's own query is encoded inside callback_url";
    is count_states(), $states + 1, 'one state row more';
    is count_rows(), 0, 'no provider row';
};

subtest 'authorize: the state row' => sub {
    my $r = state_row(state_hash($state));
    ok($r, 'a row whose state_hash is the SHA-256 hex of the state') or return;
    ok(!grep({ $_->{state_hash} eq $state } @{ state_rows() }), 'no row holds the state itself');
    ok(index(join('|', map { join '|', grep { defined } values %$_ } @{ state_rows() }), $state) < 0,
       'the state is nowhere in the table');
    is $r->{user_id}, $alice, 'bound to the user';
    is $r->{callback_url}, $CALLBACK, 'callback_url as sent';
    my $left = ($r->{expires_epoch} // 0) - time;
    ok($left > 540 && $left <= 605, 'expires in 10 minutes') or diag("expires in $left s");
    my $ct = $r->{code_verifier} // '';
    my $raw = decode_base64($ct);
    like $ct, qr{\A[A-Za-z0-9+/]+={0,2}\z}, 'code_verifier is base64';
    is length($raw), 12 + 43 + 16, 'nonce + 43-character verifier + tag (AES-256-GCM)';
    unlike $ct, qr/\A[A-Za-z0-9._~-]{43,128}\z/, 'not a plaintext verifier';
    SKIP: {
        skip 'node is not installed', 1 unless $NODE;
        ok(defined webcrypto_sha($ct), 'decrypts with the configured key (Web Crypto AES-GCM)');
    }
};

subtest 'authorize: bad callbackUrl: 400, no state written' => sub {
    my $states = count_states();
    for my $c (
        [ 'missing', {} ],
        [ 'null', { callbackUrl => undef } ],
        [ 'a number', { callbackUrl => 42 } ],
        [ 'an array', { callbackUrl => [$CALLBACK] } ],
        [ 'an object', { callbackUrl => { url => $CALLBACK } } ],
        [ 'a boolean', { callbackUrl => JSON::PP::true } ],
        [ 'empty', { callbackUrl => '' } ],
        [ 'ftp://', { callbackUrl => 'ftp://app.example/cb' } ],
        [ 'javascript:', { callbackUrl => 'javascript:alert(1)' } ],
        [ 'relative', { callbackUrl => '/cb?x=1' } ],
        [ 'no scheme', { callbackUrl => 'app.example/cb' } ],
        [ 'no host', { callbackUrl => 'https:///cb' } ],
        [ 'nothing after the scheme', { callbackUrl => 'https://' } ],
        [ 'with a #fragment', { callbackUrl => 'https://app.example/cb#frag' } ],
        [ 'with an empty #', { callbackUrl => 'https://app.example/cb?x=1#' } ],
        [ 'with a space', { callbackUrl => 'https://app.example/c b' } ],
    ) {
        my ($name, $body) = @$c;
        my ($res) = call(POST => $AUTHZ, token => $tok, json => $body);
        is_error($res, 400, 'INVALID_REQUEST', "callbackUrl $name", field => 'callbackUrl');
    }
    my ($res) = call(POST => $AUTHZ, token => $tok, json => { callbackUrl => $CALLBACK, extra => 1 });
    is_error($res, 400, 'INVALID_REQUEST', 'unknown field', field => 'extra');
    ($res) = call(POST => $AUTHZ, token => $tok, json => { callbackUrl => $CALLBACK, codeVerifier => rand_verifier() });
    is_error($res, 400, 'INVALID_REQUEST', 'a verifier from the browser is not taken here', field => 'codeVerifier');
    ($res) = call(POST => $AUTHZ, token => $tok, body => '[]');
    is_error($res, 400, 'INVALID_REQUEST', 'not an object');
    ($res) = call(POST => $AUTHZ, token => $tok, body => '{"callbackUrl":');
    is_error($res, 400, 'INVALID_REQUEST', 'malformed JSON');
    ($res) = call(POST => $AUTHZ, token => $tok, body => qq({"callbackUrl":"$CALLBACK"}), content_type => 'text/plain');
    is_error($res, 415, 'UNSUPPORTED_MEDIA_TYPE', 'not application/json');
    is count_states(), $states, 'no state row written';
};

subtest 'authorize: identity and encryption key' => sub {
    my $states = count_states();
    my ($res) = call(POST => $AUTHZ, json => { callbackUrl => $CALLBACK });
    is_error($res, 401, 'UNAUTHORIZED', 'no session');
    like $res->header('WWW-Authenticate') // '', qr/^Bearer\b/i, 'WWW-Authenticate: Bearer';
    ($res) = call(POST => $AUTHZ, token => 'TESTTOKEN-or-unknown-0001', json => { callbackUrl => $CALLBACK });
    is_error($res, 401, 'UNAUTHORIZED', 'unknown token');
    my $old = session($alice, expires_in => -60);
    ($res) = call(POST => $AUTHZ, token => $old, json => { callbackUrl => $CALLBACK });
    is_error($res, 401, 'UNAUTHORIZED', 'expired session');
    ($res) = authorize($tok, undef, '/nokey/ai-providers');
    is_error($res, 500, 'ENCRYPTION_FAILED', '/nokey: no encryption key configured');
    is count_states(), $states, 'no state row written';
};

# ================================================================ full flow with state
my ($first_code, $first_id, $first_key, $server_verifier);
subtest 'full flow: the browser at OpenRouter comes back with a code' => sub {
    my ($res, $loc, $code) = follow($auth_url);
    is $res->code, 302, 'the mock answers authUrl with 302';
    like $code // '', qr/\A[0-9a-f]{32}\z/, 'a code in the callback';
    $first_code = $code // '';
    ok($loc eq "$CALLBACK&state=$state&code=$first_code",
       'Location: the callbackUrl with x=1, then state=<state>, then code=<code>')
        or diag('Location has the form ' . ($loc =~ s/state=[^&]*/state=STATE/r =~ s/code=[0-9a-f]+/code=CODE/r));
};

subtest 'full flow: exchange with state' => sub {
    my $rows = count_rows();
    my $n = n_exchanges();
    my $cookie = 'session=TESTTOKEN-or-cookie-' . rand_hex(8);
    my ($res) = exchange($tok, { code => $first_code, state => $state },
                         headers => { Cookie => $cookie });
    no_store($res, 'exchange');
    $first_id = exchange_ok($res, 'exchange') // '';
    is count_rows(), $rows + 1, 'one row more';
    is n_exchanges(), $n + 1, 'one exchange reached the mock';
    ok(!state_row(state_hash($state)), 'the state row is gone (single use)');

    my $iss = issued($first_code);
    ok($iss, 'the mock issued a key for the code') or return;
    $first_key = $iss->{key};
    my $p = detail($tok, $first_id) || {};
    is $p->{id}, $first_id, 'detail: same id';
    is $p->{provider}, 'openrouter', 'provider openrouter';
    is $p->{keyLabel}, 'OpenRouter', 'keyLabel OpenRouter';
    is_true($p->{isActive}, 'isActive true');
    is_false($p->{isDefault}, 'isDefault false');
    is $p->{providerUserId}, $iss->{user_id}, "providerUserId is OpenRouter's user_id";
    is $p->{keyHash}, sha256_hex($first_key), 'keyHash is the SHA-256 of the issued key';
    is_true($p->{keyDecryptable}, 'keyDecryptable true');
    is $p->{currentUsage}, 0, 'currentUsage 0';
    ok(!defined $p->{usageLimit}, 'usageLimit null');
    row_holds_key($first_id, $first_key, 'the stored key');
    is scalar @{ openrouter_rows($alice) }, 1, 'one openrouter row for the user';
    is_deeply [ map { $_->{user_id} } @{ openrouter_rows($bob) } ], [], 'none for another user';

    # what reached OpenRouter
    my $x = exchanges()->[-1] || {};
    is $x->{method}, 'POST', 'POST';
    is $x->{path}, $EXCH_PATH, 'to AIProvOpenRouterExchangeURL, no query';
    my $h = $x->{headers} || {};
    like $h->{'content-type'} // '', qr{\Aapplication/json\b}i, 'Content-Type: application/json';
    ok(!exists $h->{authorization}, 'no Authorization header');
    ok(!exists $h->{cookie}, 'no Cookie header');
    my $all = join "\n", map { "$_: $h->{$_}" } sort keys %$h;
    ok(index($all, $tok) < 0 && index($all, $cookie) < 0 && index($all, 'TESTTOKEN') < 0,
       "none of the client's credentials in the headers");
    ok(index($x->{body} // '', 'TESTTOKEN') < 0, 'nor in the body');
    my $b = eval { JSON::PP->new->decode($x->{body} // '') };
    is_deeply field_set($b), [qw(code code_challenge_method code_verifier)],
        'body: JSON {code, code_verifier, code_challenge_method}';
    $b = {} unless ref $b eq 'HASH';
    ok(defined $b->{code} && $b->{code} eq $first_code, 'code as the browser brought it');
    is $b->{code_challenge_method}, 'S256', 'code_challenge_method S256';
    $server_verifier = $b->{code_verifier} // '';
    $VERIFIERS{$server_verifier} = 1 if length $server_verifier;
    ok($server_verifier =~ /\A[A-Za-z0-9._~-]{43,128}\z/, 'code_verifier: 43-128 unreserved characters');
    ok(s256($server_verifier) eq $challenge, "the verifier is the one behind authUrl's code_challenge");
    ok(index($auth_url, $server_verifier) < 0, 'the verifier is not in authUrl');
};

subtest 'full flow: the verifier never reached the browser' => sub {
    ok(length $server_verifier, 'the verifier is known') or return;
    ok(!grep({ index($_, $server_verifier) >= 0 } @BODIES), 'no response of this file so far holds it');
};

subtest 'full flow: a state is good for one exchange' => sub {
    my $snap = snapshot();
    my $n = n_exchanges();
    my ($res) = exchange($tok, { code => $first_code, state => $state });
    is_error($res, 400, 'OAUTH_EXCHANGE_FAILED', 'the same state again');
    is n_exchanges(), $n, 'OpenRouter was not asked';
    # a fresh code with the used state
    my (undef, undef, $code) = follow($auth_url);
    ($res) = exchange($tok, { code => $code // 'x', state => $state });
    is_error($res, 400, 'OAUTH_EXCHANGE_FAILED', 'a new code with the used state');
    is n_exchanges(), $n, 'OpenRouter was not asked';
    ($res) = exchange($tok, { code => $code // 'x', state => 'A' x 43 });
    is_error($res, 400, 'OAUTH_EXCHANGE_FAILED', 'a state the server never made');
    is n_exchanges(), $n, 'OpenRouter was not asked';
    is_deeply snapshot(), $snap, 'nothing written';
};

subtest "full flow: another user's state" => sub {
    my ($st, $code) = authorized_code($tok);
    my $snap = snapshot();
    my $n = n_exchanges();
    my ($res) = exchange($btok, { code => $code, state => $st });
    is_error($res, 400, 'OAUTH_EXCHANGE_FAILED', "bob sends alice's state");
    is n_exchanges(), $n, 'OpenRouter was not asked';
    is_deeply snapshot(), $snap, 'nothing written';
    is_deeply openrouter_rows($bob), [], 'bob has no openrouter row';
    my $r = state_row(state_hash($st));
    ok($r && $r->{user_id} eq $alice, "alice's state row is still there, still hers");
    ($res) = exchange($tok, { code => $code, state => $st });
    my $id = exchange_ok($res, 'alice uses it afterwards');
    is $id, $first_id, 'her existing row';
    is n_exchanges(), $n + 1, 'this time OpenRouter was asked';
    my $iss = issued($code);
    ok($iss && row($first_id) && row($first_id)->{key_hash} eq sha256_hex($iss->{key}), 'with the new key');
    $first_key = $iss->{key} if $iss;
};

subtest 'full flow: an expired state is refused, and used up' => sub {
    my ($st, $code) = authorized_code($tok);
    expire_state(state_hash($st));
    my $snap = snapshot();
    my $n = n_exchanges();
    my ($res) = exchange($tok, { code => $code, state => $st });
    is_error($res, 400, 'OAUTH_EXCHANGE_FAILED', 'expired state');
    like fresh($res)->{message} // '', qr/expire/i, 'the message says it expired';
    is n_exchanges(), $n, 'OpenRouter was not asked';
    ok(!state_row(state_hash($st)), 'the state row is gone');
    is_deeply snapshot(), $snap, 'nothing written';
    ($res) = exchange($tok, { code => $code, state => $st });
    is_error($res, 400, 'OAUTH_EXCHANGE_FAILED', 'and it does not come back');
    is n_exchanges(), $n, 'OpenRouter was not asked';
};

subtest 'full flow: a second flow replaces the key of the row' => sub {
    ok(my $before = row($first_id), 'the row') or return;
    my ($res) = call(PUT => M . "/$first_id", token => $tok,
                     json => { keyLabel => 'My OpenRouter', isDefault => JSON::PP::true, usageLimit => 1000 });
    is $res->code, 200, 'renamed, made default, limited';
    db()->do('UPDATE ai_provider SET current_usage = 7 WHERE id = ?', undef, $first_id);
    my ($st, $code) = authorized_code($tok);
    my $rows = count_rows();
    ($res) = exchange($tok, { code => $code, state => $st });
    my $id = exchange_ok($res, 'second exchange');
    is $id, $first_id, 'the same id';
    is count_rows(), $rows, 'no row more';
    is scalar @{ openrouter_rows($alice) }, 1, 'still one openrouter row for the user';
    my $iss = issued($code) or return fail('the mock issued a key');
    ok($iss->{key} ne $first_key, 'a different key was issued');
    my $p = detail($tok, $first_id) || {};
    is $p->{keyHash}, sha256_hex($iss->{key}), 'keyHash is the new key';
    isnt $p->{keyHash}, sha256_hex($first_key), 'not the old one';
    is $p->{providerUserId}, $iss->{user_id}, 'providerUserId updated';
    is_true($p->{keyDecryptable}, 'keyDecryptable true');
    is $p->{keyLabel}, 'My OpenRouter', 'keyLabel kept';
    is_true($p->{isDefault}, 'isDefault kept');
    is $p->{usageLimit}, 1000, 'usageLimit kept';
    is $p->{currentUsage}, 7, 'currentUsage kept';
    is row($first_id)->{created_at}, $before->{created_at}, 'created_at unchanged';
    row_holds_key($first_id, $iss->{key}, 'the stored key is the new one');
    $first_key = $iss->{key};
};

# ================================================================ seed flow
my $carol = make_user('or-carol');
my $ctok  = session($carol);

subtest 'seed flow: the browser sends its own verifier (S256)' => sub {
    my $v = rand_verifier(64);
    my $code = mock_code($v);
    my $rows = count_rows();
    my ($res) = exchange($ctok, { code => $code, codeVerifier => $v, codeChallengeMethod => 'S256' });
    my $id = exchange_ok($res, 'exchange') or return;
    is count_rows(), $rows + 1, 'one row more';
    my $iss = issued($code) or return fail('the mock issued a key');
    my $p = detail($ctok, $id) || {};
    is $p->{provider}, 'openrouter', 'provider openrouter';
    is $p->{keyLabel}, 'OpenRouter', 'keyLabel OpenRouter';
    is_true($p->{isActive}, 'isActive true');
    is $p->{providerUserId}, $iss->{user_id}, 'providerUserId';
    is $p->{keyHash}, sha256_hex($iss->{key}), 'keyHash';
    is_true($p->{keyDecryptable}, 'keyDecryptable true');
    row_holds_key($id, $iss->{key}, 'the stored key');
    my $b = eval { JSON::PP->new->decode(exchanges()->[-1]{body}) } || {};
    ok(join(',', sort keys %$b) eq 'code,code_challenge_method,code_verifier'
       && ($b->{code} // '') eq $code && ($b->{code_verifier} // '') eq $v
       && ($b->{code_challenge_method} // '') eq 'S256',
       'OpenRouter got {code, code_verifier: the browser\'s, code_challenge_method: S256}');
    is count_states(), 0, 'no state row involved';
    db()->do('DELETE FROM ai_provider WHERE id = ?', undef, $id);
};

subtest 'seed flow: plain' => sub {
    my $v = rand_verifier(128);
    my $code = mock_code($v, method => 'plain');
    my ($res) = exchange($ctok, { code => $code, codeVerifier => $v, codeChallengeMethod => 'plain' });
    my $id = exchange_ok($res, 'exchange (plain, 128 characters)') or return;
    my $iss = issued($code) or return fail('the mock issued a key');
    is((detail($ctok, $id) || {})->{keyHash}, sha256_hex($iss->{key}), 'keyHash');
    my $b = eval { JSON::PP->new->decode(exchanges()->[-1]{body}) } || {};
    ok(($b->{code_verifier} // '') eq $v && ($b->{code_challenge_method} // '') eq 'plain',
       'OpenRouter got the verifier and plain');
    db()->do('DELETE FROM ai_provider WHERE id = ?', undef, $id);
};

subtest 'seed flow: the shortest verifier (43) with every unreserved character class' => sub {
    my $v = substr('aZ09-._~' . rand_verifier(64), 0, 43);
    my $code = mock_code($v);
    my ($res) = exchange($ctok, { code => $code, codeVerifier => $v, codeChallengeMethod => 'S256' });
    my $id = exchange_ok($res, 'exchange') or return;
    db()->do('DELETE FROM ai_provider WHERE id = ?', undef, $id);
};

subtest 'seed flow: wrong verifier: OpenRouter refuses' => sub {
    my $v = rand_verifier(64);
    my $code = mock_code($v);
    my $wrong = rand_verifier(64);
    $VERIFIERS{$wrong} = 1;
    my $snap = snapshot();
    my $n = n_exchanges();
    my ($res) = exchange($ctok, { code => $code, codeVerifier => $wrong, codeChallengeMethod => 'S256' });
    is_error($res, 400, 'OAUTH_EXCHANGE_FAILED', 'wrong verifier');
    my $msg = (fresh($res) || {})->{message} // '';
    like $msg, qr/OpenRouter/, 'the message names OpenRouter';
    like $msg, qr/\bHTTP 403\b/, "and its status (HTTP 403)";
    like $msg, qr/refuse|reject|denied|invalid/i, 'and that it refused';
    ok(index($msg, $code) < 0, 'not the code');
    ok(index($msg, $wrong) < 0 && index($msg, $v) < 0, 'not a verifier');
    is n_exchanges(), $n + 1, 'OpenRouter was asked once';
    is_deeply snapshot(), $snap, 'nothing written';
    # the code was not consumed by the refusal: the right verifier still works
    ($res) = exchange($ctok, { code => $code, codeVerifier => $v, codeChallengeMethod => 'S256' });
    my $id = exchange_ok($res, 'then the right verifier');
    db()->do('DELETE FROM ai_provider WHERE id = ?', undef, $id) if $id;
};

subtest 'seed flow: bad verifiers are refused before OpenRouter is asked' => sub {
    my $snap = snapshot();
    my $n = n_exchanges();
    my $good = rand_verifier(64);
    for my $c ([ '42 characters', substr($good, 0, 42) ],
               [ '129 characters', rand_verifier(129) ],
               [ 'empty', '' ],
               [ 'a +', substr($good, 0, 50) . '+' ],
               [ 'a /', substr($good, 0, 50) . '/' ],
               [ 'a =', substr($good, 0, 50) . '=' ],
               [ 'a space', substr($good, 0, 25) . ' ' . substr($good, 25, 25) ],
               [ 'a %', substr($good, 0, 50) . '%41' ],
               [ 'non-ASCII', substr($good, 0, 50) . "\x{e9}" ],
               [ 'a newline', substr($good, 0, 50) . "\n" ]) {
        my ($name, $v) = @$c;
        my $code = mock_code($v =~ /\A[\x00-\x7f]*\z/ ? $v : 'x' x 43);
        my ($res) = exchange($ctok, { code => $code, codeVerifier => $v, codeChallengeMethod => 'S256' });
        is_error($res, 400, 'OAUTH_EXCHANGE_FAILED', "verifier: $name");
        my $msg = (fresh($res) || {})->{message} // '';
        ok(index($msg, $code) < 0 && (!length $v || index($msg, $v) < 0), "$name: message holds neither code nor verifier");
    }
    is n_exchanges(), $n, 'OpenRouter was never asked';
    is_deeply snapshot(), $snap, 'nothing written';
};

subtest 'seed flow: malformed exchange requests: 400 INVALID_REQUEST' => sub {
    my $v = rand_verifier(64);
    my $code = mock_code($v);
    my ($st) = authorized_code($ctok);
    my $states = count_states();
    my $snap = snapshot();
    my $n = n_exchanges();
    for my $c (
        [ 'codeChallengeMethod S512', { code => $code, codeVerifier => $v, codeChallengeMethod => 'S512' }, 'codeChallengeMethod' ],
        [ 'codeChallengeMethod s256', { code => $code, codeVerifier => $v, codeChallengeMethod => 's256' }, 'codeChallengeMethod' ],
        [ 'codeChallengeMethod empty', { code => $code, codeVerifier => $v, codeChallengeMethod => '' }, 'codeChallengeMethod' ],
        [ 'codeChallengeMethod a number', { code => $code, codeVerifier => $v, codeChallengeMethod => 256 }, 'codeChallengeMethod' ],
        [ 'both state and codeVerifier', { code => $code, codeVerifier => $v, state => $st } ],
        [ 'neither state nor codeVerifier', { code => $code } ],
        [ 'neither, with a method', { code => $code, codeChallengeMethod => 'S256' } ],
        [ 'missing code (verifier)', { codeVerifier => $v, codeChallengeMethod => 'S256' }, 'code' ],
        [ 'missing code (state)', { state => $st }, 'code' ],
        [ 'empty code', { code => '', codeVerifier => $v, codeChallengeMethod => 'S256' }, 'code' ],
        [ 'code a number', { code => 1234, codeVerifier => $v, codeChallengeMethod => 'S256' }, 'code' ],
        [ 'code null', { code => undef, codeVerifier => $v, codeChallengeMethod => 'S256' }, 'code' ],
        [ 'code an array', { code => [$code], codeVerifier => $v, codeChallengeMethod => 'S256' }, 'code' ],
        [ 'codeVerifier a number', { code => $code, codeVerifier => 12345, codeChallengeMethod => 'S256' }, 'codeVerifier' ],
        [ 'state an object', { code => $code, state => { s => $st } }, 'state' ],
        [ 'an unknown field', { code => $code, codeVerifier => $v, codeChallengeMethod => 'S256', apiKey => 'x' }, 'apiKey' ],
        [ 'snake_case code_verifier', { code => $code, code_verifier => $v }, 'code_verifier' ],
        [ 'empty object', {} ],
    ) {
        my ($name, $body, $field) = @$c;
        my ($res) = exchange($ctok, $body);
        is_error($res, 400, 'INVALID_REQUEST', $name, defined $field ? (field => $field) : ());
    }
    my ($res) = call(POST => $EXCH, token => $ctok, body => '["code"]');
    is_error($res, 400, 'INVALID_REQUEST', 'not an object');
    ($res) = call(POST => $EXCH, token => $ctok, body => '{"code":"x",');
    is_error($res, 400, 'INVALID_REQUEST', 'malformed JSON');
    ($res) = call(POST => $EXCH, token => $ctok, body => '{"code":"x","state":"y"}', content_type => 'text/plain');
    is_error($res, 415, 'UNSUPPORTED_MEDIA_TYPE', 'not application/json');
    is n_exchanges(), $n, 'OpenRouter was never asked';
    is count_states(), $states, 'the state was not used up by the malformed requests';
    is_deeply snapshot(), $snap, 'nothing written';
};

subtest 'exchange: identity and encryption key' => sub {
    my $v = rand_verifier(64);
    my $code = mock_code($v);
    my $snap = snapshot();
    my $n = n_exchanges();
    my $body = { code => $code, codeVerifier => $v, codeChallengeMethod => 'S256' };
    my ($res) = call(POST => $EXCH, json => $body);
    is_error($res, 401, 'UNAUTHORIZED', 'no session');
    like $res->header('WWW-Authenticate') // '', qr/^Bearer\b/i, 'WWW-Authenticate: Bearer';
    ($res) = call(POST => $EXCH, token => 'TESTTOKEN-or-unknown-0002', json => $body);
    is_error($res, 401, 'UNAUTHORIZED', 'unknown token');
    ($res) = exchange($ctok, $body, mount => '/nokey/ai-providers');
    is_error($res, 500, 'ENCRYPTION_FAILED', '/nokey: no encryption key configured');
    is n_exchanges(), $n, 'OpenRouter was never asked (the key could not be stored)';
    is_deeply snapshot(), $snap, 'nothing written';
};

# ================================================================ failure modes
# Each failure for a user without an openrouter row (nothing may be created)
# and for one with a row (nothing may be changed).
my $dave = make_user('or-dave');
my $dtok = session($dave);
my $dave_id;
{
    my $v = rand_verifier(64);
    my ($res) = exchange($dtok, { code => mock_code($v), codeVerifier => $v, codeChallengeMethod => 'S256' });
    $dave_id = exchange_ok($res, 'dave has an openrouter row');
}

my @FAILURES = (
    [ expired   => qr/Code expired/,                      'OpenRouter\'s "Code expired" is passed on' ],
    [ status500 => qr/\b500\b/,                           'the message gives the status 500' ],
    [ garbage   => qr/./,                                 'a message' ],
    [ nokey     => qr/key/i,                              'the message is about the key' ],
    [ badkey    => qr/key/i,                              'the message is about the key' ],
    [ huge      => qr/large|size|big|long|limit|bytes/i,  'the message is about the size' ],
);
for my $f (@FAILURES) {
    my ($behavior, $re, $what) = @$f;
    subtest "OpenRouter fails: $behavior" => sub {
        for my $who ([ carol => $ctok ], [ dave => $dtok ]) {
            my ($name, $t) = @$who;
            my $v = rand_verifier(64);
            my $code = mock_code($v, behavior => $behavior);
            my $snap = snapshot();
            my $rows = count_rows();
            my $n = n_exchanges();
            my ($res) = exchange($t, { code => $code, codeVerifier => $v, codeChallengeMethod => 'S256' });
            is_error($res, 400, 'OAUTH_EXCHANGE_FAILED', "$name: $behavior");
            my $msg = (fresh($res) || {})->{message} // '';
            like $msg, $re, "$name: $what";
            ok(index($msg, $code) < 0 && index($msg, $v) < 0, "$name: message holds neither code nor verifier");
            my $iss = issued($code);
            ok(!$iss || index($msg, $iss->{key}) < 0, "$name: nor the key OpenRouter sent");
            is n_exchanges(), $n + 1, "$name: OpenRouter was asked once";
            is count_rows(), $rows, "$name: no row created";
            is_deeply snapshot(), $snap, "$name: no row changed";
        }
    };
}

subtest 'OpenRouter is slow: AIProvUpstreamTimeout 2 (/short)' => sub {
    my $v = rand_verifier(64);
    my $code = mock_code($v, behavior => 'slow');
    my $snap = snapshot();
    my $t0 = Time::HiRes::time();
    my ($res) = exchange($dtok, { code => $code, codeVerifier => $v, codeChallengeMethod => 'S256' },
                         mount => '/short/ai-providers');
    my $took = Time::HiRes::time() - $t0;
    is_error($res, 400, 'OAUTH_EXCHANGE_FAILED', 'slow');
    ok($took >= 1.5 && $took < 4.5, 'answered after the 2-second timeout, not after the 10 s of the mock')
        or diag(sprintf 'took %.1f s', $took);
    my $msg = (fresh($res) || {})->{message} // '';
    like $msg, qr/\b2 seconds?\b|time[ds]? ?out|timeout/i, 'the message is about the timeout';
    is_deeply snapshot(), $snap, 'nothing written';
};

subtest 'OpenRouter is unreachable (/unreachable: a closed port)' => sub {
    my $v = rand_verifier(64);
    my $code = mock_code($v);
    my $snap = snapshot();
    my $n = n_exchanges();
    for my $who ([ carol => $ctok ], [ dave => $dtok ]) {
        my ($name, $t) = @$who;
        my $t0 = Time::HiRes::time();
        my ($res) = exchange($t, { code => $code, codeVerifier => $v, codeChallengeMethod => 'S256' },
                             mount => '/unreachable/ai-providers');
        is_error($res, 400, 'OAUTH_EXCHANGE_FAILED', "$name: unreachable");
        like((fresh($res) || {})->{message} // '', qr/unreachable/i, "$name: the message says unreachable");
        ok(Time::HiRes::time() - $t0 < 10, "$name: at once");
    }
    is n_exchanges(), $n, 'nothing reached the mock';
    is_deeply snapshot(), $snap, 'nothing written';
    # with state (the code does not matter: nothing answers)
    my ($r1, $d) = authorize($dtok, undef, '/unreachable/ai-providers');
    is $r1->code, 200, 'authorize under /unreachable';
    ok(index((ref $d eq 'HASH' ? $d->{authUrl} : undef) // '', 'http://127.0.0.1:1/auth?') == 0,
       "authUrl is that mount's AIProvOpenRouterAuthURL");
    my $st = ref $d eq 'HASH' ? $d->{state} // '' : '';
    my ($res) = exchange($dtok, { code => 'f' x 32, state => $st }, mount => '/unreachable/ai-providers');
    is_error($res, 400, 'OAUTH_EXCHANGE_FAILED', 'with state: unreachable');
    like((fresh($res) || {})->{message} // '', qr/unreachable/i, 'the message says unreachable');
    ok(!state_row(state_hash($st)), 'the state is used up');
    is n_exchanges(), $n, 'nothing reached the mock';
    is_deeply snapshot(), $snap, 'nothing written';
};

subtest "after all failures, dave's row is as it was" => sub {
    my $p = detail($dtok, $dave_id // '') || {};
    is $p->{id}, $dave_id, 'still there';
    is_true($p->{keyDecryptable}, 'its key still opens');
    is scalar @{ openrouter_rows($dave) }, 1, 'one openrouter row';
    is scalar @{ openrouter_rows($carol) }, 0, 'carol has none (all seed rows were deleted by the test)';
};

# ================================================================ secrets
subtest 'no issued key, verifier or code in any response' => sub {
    # everything the mock saw or issued
    for my $x (@{ exchanges() }) {
        my $b = eval { JSON::PP->new->decode($x->{body} // '') };
        next unless ref $b eq 'HASH';
        $CODES{ $b->{code} } = 1 if defined $b->{code} && !ref $b->{code};
        $VERIFIERS{ $b->{code_verifier} } = 1 if defined $b->{code_verifier} && !ref $b->{code_verifier};
    }
    my @keys = grep { defined } map { my $i = issued($_); $i ? $i->{key} : undef } sort keys %CODES;
    ok(@keys >= 10, 'the mock issued keys to check for') or diag(scalar(@keys) . ' keys');
    ok(keys %VERIFIERS >= 20, 'verifiers to check for');
    ok(keys %CODES >= 20, 'codes to check for');
    ok(@BODIES > 50, 'responses to check');
    my $all = join "\n", @BODIES;
    ok(!grep({ index($all, $_) >= 0 } @keys), 'no issued key');
    my @x = @{ exchanges() };
    ok(!grep({ exists $_->{headers}{authorization} || exists $_->{headers}{cookie} } @x),
       'no exchange (of ' . scalar(@x) . ') carried an Authorization or Cookie header');
    ok(!grep({ index(JSON::PP->new->canonical->encode($_), 'TESTTOKEN') >= 0 } @{ mock_captured() }),
       'no bearer token of this file reached the mock');
    ok(!grep({ length >= 8 && index($all, $_) >= 0 } keys %VERIFIERS), 'no verifier');
    ok(!grep({ index($all, $_) >= 0 } keys %CODES), 'no code');
};

subtest 'no issued key, verifier, code or state in the error log' => sub {
    my $log = error_log();
    ok(length $log, 'there is an error log');
    like $log, qr/aiprov/, 'mod_aiprov logged to it';
    my @keys = grep { defined } map { my $i = issued($_); $i ? $i->{key} : undef } sort keys %CODES;
    ok(@keys, 'keys to look for');
    ok(!grep({ index($log, $_) >= 0 } @keys), 'no issued key (' . scalar(@keys) . ')');
    ok(!grep({ length >= 8 && index($log, $_) >= 0 } keys %VERIFIERS), 'no verifier (' . keys(%VERIFIERS) . ')');
    ok(!grep({ index($log, $_) >= 0 } keys %CODES), 'no code (' . keys(%CODES) . ')');
    ok(!grep({ index($log, $_) >= 0 } keys %STATES), 'no state (' . keys(%STATES) . ')');
    ok(keys %STATES >= 5, 'states to look for');
};

done_testing();
