# Who is asking: bearer sessions, trusted r->user, a custom session query,
# and that a user never sees or touches another user's rows.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use lib 't/lib', 't/fixtures';
use AiprovTest;
use ApiAssert;
use MIME::Base64 ();

reset_db();

my $KA = 'sk-TESTSECRET-ident-alice-0001';
my $KB = 'sk-TESTSECRET-ident-bob-0001';

my $ua   = make_user('ident-a');
my $ub   = make_user('ident-b');
my $tokA = session($ua);
my $tokB = session($ub);
my $expired = session($ua, expires_in => -60);

# A 401 from mod_aiprov: the error, and the challenge.
sub unauthorized {
    my ($res, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        is_error($res, 401, 'UNAUTHORIZED', 'error');
        like $res->header('WWW-Authenticate') // '', qr/\ABearer\b/i, 'WWW-Authenticate: Bearer';
    };
}

my $idA = create_ok(M, $tokA, { provider => 'openai', apiKey => $KA, keyLabel => 'A' }, "A's openai")
    // rand_uuid();

subtest 'bad credentials on every method' => sub {
    my @req = ([ GET => M ], [ POST => M, json => { provider => 'groq', apiKey => 'gsk_TESTSECRET-ident-x' } ],
               [ GET => M . "/$idA" ], [ PUT => M . "/$idA", json => { keyLabel => 'hacked' } ],
               [ DELETE => M . "/$idA" ]);
    my %cred = (
        'no Authorization'   => {},
        'Basic scheme'       => { headers => { Authorization => 'Basic ' . MIME::Base64::encode_base64('ident-a:x', '') } },
        'Bearer, no token'   => { headers => { Authorization => 'Bearer' } },
        'Bearer, empty'      => { headers => { Authorization => 'Bearer ' } },
        'unknown token'      => { token => TOKEN_MARK . '-unknown-' . rand_hex(8) },
        'expired token'      => { token => $expired },
        'SQL in the token'   => { token => TOKEN_MARK . q{' OR '1'='1} },
        'token with suffix'  => { token => "$tokA x" },
        'token prefix only'  => { token => substr($tokA, 0, -1) },
        'over-long token'    => { token => TOKEN_MARK . ('x' x 4000) },
    );
    my $before = snapshot();
    for my $c (sort keys %cred) {
        for my $r (@req) {
            my ($method, $path, @body) = @$r;
            my ($res) = api($method, $path, %{ $cred{$c} }, @body);
            unauthorized($res, "$c: $method " . ($path eq M ? 'M' : 'M/{id}'));
        }
    }
    is_deeply snapshot(), $before, 'nothing changed in the database';
};

subtest 'scheme name is case-insensitive' => sub {
    for my $scheme ('bearer', 'BEARER', 'BeArEr') {
        my ($res) = api(GET => M, headers => { Authorization => "$scheme $tokA" });
        is $res->code, 200, "$scheme <token>: 200";
        is scalar @{ (fresh($res) || {})->{providers} || [] }, 1, 'sees its row';
    }
};

subtest 'cross-user isolation' => sub {
    my ($res) = api(GET => M, token => $tokB);
    is $res->code, 200, 'B lists';
    is_deeply fresh($res), { providers => [] }, "B's list is empty";

    my $before = row($idA);
    my $missing = rand_uuid();
    for my $case ([ GET => undef ], [ PUT => { keyLabel => 'stolen', isDefault => JSON::PP::true } ],
                  [ PUT => {} ], [ DELETE => undef ]) {
        my ($method, $json) = @$case;
        my @body = defined $json ? (json => $json) : ();
        my ($rf) = api($method, M . "/$idA", token => $tokB, @body);
        my ($rm) = api($method, M . "/$missing", token => $tokB, @body);
        my $tag = $method . (defined $json ? ' ' . JSON::PP->new->canonical->encode($json) : '');
        is_error($rf, 404, 'PROVIDER_NOT_FOUND', "B: $tag on A's id");
        is $rf->code, $rm->code, "$tag: same status as a random id";
        is_deeply fresh($rf), fresh($rm), "$tag: same body as a random id";
        is_deeply row($idA), $before, "$tag: A's row unchanged";
    }
    ($res) = api(GET => M . "/" . uc $idA, token => $tokB);
    is_error($res, 404, 'PROVIDER_NOT_FOUND', "B: A's id in upper case");

    ($res) = api(GET => M . "/$idA", token => $tokA);
    is $res->code, 200, 'A still reads it';
    is((fresh($res) || {})->{provider}{keyLabel}, 'A', 'with its own label');
};

subtest 'two users can each have the same provider' => sub {
    my $idB = create_ok(M, $tokB, { provider => 'openai', apiKey => $KB, keyLabel => 'B' }, "B's openai");
    ok $idB && $idB ne $idA, 'a different row';
    my $la = (fresh((api(GET => M, token => $tokA))[0]) || {})->{providers} || [];
    my $lb = (fresh((api(GET => M, token => $tokB))[0]) || {})->{providers} || [];
    is_deeply [ map { $_->{id} } @$la ], [$idA], 'A sees only A';
    is_deeply [ map { $_->{id} } @$lb ], [ $idB // 'none' ], 'B sees only B';
    is $la->[0]{keyHash}, sha256_hex($KA), "A's key hash";
    is $lb->[0]{keyHash}, sha256_hex($KB), "B's key hash";
    is row($idB // rand_uuid()) && row($idB)->{user_id}, $ub, 'stored for B';

    my ($res) = api(DELETE => M . '/' . ($idB // rand_uuid()), token => $tokB);
    is $res->code, 200, 'B deletes its own row';
    ok row($idA), "and A's is still there";
};

subtest 'a session of a deleted user no longer works' => sub {
    my $uz = make_user('ident-z');
    my $tz = session($uz);
    is((api(GET => M, token => $tz))[0]->code, 200, 'works while the session exists');
    db()->do('DELETE FROM session WHERE token = ?', undef, $tz);
    unauthorized((api(GET => M, token => $tz))[0], 'session deleted: 401');
};

# ---------------------------------------------------------------- AIProvTrustRemoteUser
my $T = '/trusted/ai-providers';
subtest 'trusted remote user (Basic auth in front)' => sub {
    make_user('alice');
    make_user('bob');
    my $bobs = create_ok(M, session('bob'), { provider => 'anthropic', apiKey => 'sk-ant-TESTSECRET-bob-0002' },
                         "bob's row, made with a bearer session");
    my ($res) = api(GET => $T, basic => [qw(alice alicepw)]);
    is $res->code, 200, 'alice lists without a bearer token';
    is_deeply fresh($res), { providers => [] }, 'and sees nothing of bob or the others';

    ($res) = api(POST => $T, basic => [qw(alice alicepw)],
                 json => { provider => 'groq', apiKey => 'gsk_TESTSECRET-alice-0004' });
    is $res->code, 201, 'alice creates';
    my $aid = (fresh($res) || {})->{id} // rand_uuid();
    like $res->header('Location') // '', qr{\A(?:https?://[^/]+)?\Q$T\E/\Q$aid\E\z}, 'Location under /trusted';
    is row($aid) && row($aid)->{user_id}, 'alice', 'the row belongs to alice';

    ($res) = api(GET => $T, basic => [qw(alice alicepw)]);
    is_deeply [ map { $_->{id} } @{ (fresh($res) || {})->{providers} || [] } ], [$aid], 'alice sees her row only';
    ($res) = api(GET => "$T/$aid", basic => [qw(alice alicepw)]);
    is $res->code, 200, 'alice reads the detail';
    ($res) = api(PUT => "$T/$aid", basic => [qw(alice alicepw)], json => { keyLabel => 'mine' });
    is $res->code, 200, 'alice updates';
    is row($aid)->{key_label}, 'mine', 'updated';

    ($res) = api(GET => $T, basic => [qw(bob bobpw)]);
    is_deeply [ map { $_->{id} } @{ (fresh($res) || {})->{providers} || [] } ], [ $bobs // 'none' ],
              'bob sees only his row';
    ($res) = api(GET => "$T/$aid", basic => [qw(bob bobpw)]);
    is_error($res, 404, 'PROVIDER_NOT_FOUND', "bob cannot read alice's row");
    ($res) = api(DELETE => "$T/$aid", basic => [qw(bob bobpw)]);
    is_error($res, 404, 'PROVIDER_NOT_FOUND', "bob cannot delete alice's row");
    ok row($aid), 'still there';

    my $before = snapshot();
    ($res) = api(GET => $T, basic => [qw(alice wrong)]);
    is $res->code, 401, 'wrong password: 401';
    ($res) = api(POST => $T, basic => [qw(alice wrong)], json => { provider => 'cohere', apiKey => 'TESTSECRET-x-0006' });
    is $res->code, 401, 'wrong password, POST: 401';
    ($res) = api(GET => $T);
    is $res->code, 401, 'no credentials: 401';
    is_deeply snapshot(), $before, 'nothing changed';

    ($res) = api(GET => M, basic => [qw(alice alicepw)]);
    unauthorized($res, 'Basic is not accepted where AIProvTrustRemoteUser is Off');
};

# ---------------------------------------------------------------- AIProvSessionQuery
my $C = '/custom-session/ai-providers';
subtest 'custom session query' => sub {
    my $uc = make_user('ident-c');
    my $custom  = session($uc, user_agent => 'custom-agent');
    my $plain   = session($uc, user_agent => 'Mozilla/5.0');
    my $noagent = session($uc);
    my $old     = session($uc, user_agent => 'custom-agent', expires_in => -3600);

    my $cid = create_ok(M, $plain, { provider => 'cohere', apiKey => 'TESTSECRET-custom-0006' }, 'a row');
    my ($res) = api(GET => $C, token => $custom);
    is $res->code, 200, 'custom-agent session accepted by the custom query';
    is_deeply [ map { $_->{id} } @{ (fresh($res) || {})->{providers} || [] } ], [ $cid // 'none' ], 'sees the row';

    unauthorized((api(GET => $C, token => $plain))[0], 'another session of the same user is refused there');
    unauthorized((api(GET => $C, token => $noagent))[0], 'a session without user agent is refused there');
    is((api(GET => M, token => $plain))[0]->code, 200, 'that session works with the default query');
    is((api(GET => M, token => $custom))[0]->code, 200, 'and so does the custom-agent one');

    # the custom query checks no expiry: this proves it replaced the default
    is((api(GET => $C, token => $old))[0]->code, 200, 'expired custom-agent session: accepted by the custom query');
    unauthorized((api(GET => M, token => $old))[0], 'and refused by the default query');
};

done_testing();
