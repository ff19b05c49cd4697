# Asking the provider about a stored key without spending tokens:
#  GET  <mount>/{id}/models  refreshes supportedModels from the provider's list;
#  POST <mount>/{id}/verify  answers {valid, status} (+ limit, usage for OpenRouter);
# and AIProvVerifyKeys On (/verified/ai-providers) checking a key before a
# create: a key the provider refuses is 400 INVALID_API_KEY with no row.
# Each call's outgoing request is checked too: the key in the provider's
# header, never in the URL.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use lib 't/lib', 't/fixtures';
use AiprovTest;
use ApiAssert;
use JSON::PP ();

my $JSON = JSON::PP->new->utf8->canonical;
sub captured { mock_captured() }

my %BASE = (openai => '/openai/v1', openrouter => '/openrouter/api/v1', groq => '/groq/openai/v1',
            gemini => '/gemini/v1beta/openai', cohere => '/cohere/compatibility/v1',
            anthropic => '/anthropic/v1', ollama => '/ollama');
my @KEYED = qw(openai openrouter groq gemini cohere anthropic);

sub good_key {
    my $p = shift;
    my $h = rand_hex(6);
    { openai => "sk-$h-TESTSECRET-pxchk", openrouter => "sk-or-v1-$h-TESTSECRET-pxchk",
      groq => "gsk_${h}_TESTSECRET_pxchk", gemini => "AIza${h}TESTSECRETpxchk",
      cohere => "${h}TESTSECRETpxchkcohere00", anthropic => "sk-ant-$h-TESTSECRET-pxchk" }->{$p};
}
# refused by the mock: the key contains REJECT
sub bad_key {
    my $p = shift;
    my $h = rand_hex(6);
    { openai => "sk-${h}REJECT-TESTSECRET", openrouter => "sk-or-v1-${h}REJECT-TESTSECRET",
      groq => "gsk_${h}REJECT_TESTSECRET", gemini => "AIza${h}REJECTTESTSECRET",
      cohere => "${h}REJECTTESTSECRETcohere00", anthropic => "sk-ant-${h}REJECT-TESTSECRET" }->{$p};
}

my (%KEY, %BAD);
$KEY{$_} = good_key($_), $BAD{$_} = bad_key($_) for @KEYED;
my @SECRETS = (values %KEY, values %BAD);

reset_db();
my $user = make_user('pxchk-user');
my $tok  = session($user);
my $user2 = make_user('pxchk-user2');
my $tok2  = session($user2);

my @responses;
my @all_captured;
sub call { my ($res, $d) = api(@_); push @responses, $res; ($res, $d) }
sub take_captured { my $c = captured(); push @all_captured, @$c; $c }
sub detail { my ($t, $id) = @_; my ($res, $d) = api(GET => M . "/$id", token => $t); ($d || {})->{provider} || {} }

my (%ID, %BADID);
for my $p (@KEYED, 'ollama') {
    my %b = (provider => $p);
    $b{apiKey} = $KEY{$p} if $KEY{$p};
    $b{apiUrl} = 'http://127.0.0.1:' . mock_port() . '/ollama' if $p eq 'ollama';
    $ID{$p} = create_ok(M, $tok, \%b, "create $p") // rand_uuid();
    next unless $BAD{$p};
    $BADID{$p} = create_ok(M, $tok2, { provider => $p, apiKey => $BAD{$p} }, "create $p with a refused key")
        // rand_uuid();
}

# The key in the provider's own header(s), and nothing of it in the URL.
sub key_rides_ok {
    my ($p, $c, $key, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $h = $c->{headers} || {};
    ok index($c->{path} // '', $key // "\0") < 0, "$name: the key is not in the URL" if defined $key;
    if ($p eq 'ollama') {
        ok !exists $h->{authorization}, "$name: no Authorization for a keyless Ollama";
    }
    elsif ($p eq 'anthropic') {
        ok defined $h->{'x-api-key'} && $h->{'x-api-key'} eq $key, "$name: x-api-key";
        is $h->{'anthropic-version'}, '2023-06-01', "$name: anthropic-version";
        ok !exists $h->{authorization}, "$name: no Authorization";
    }
    elsif ($p eq 'gemini') {
        ok((defined $h->{'x-goog-api-key'} && $h->{'x-goog-api-key'} eq $key)
           || (defined $h->{authorization} && $h->{authorization} eq "Bearer $key"), "$name: x-goog-api-key or Bearer");
    }
    else {
        ok defined $h->{authorization} && $h->{authorization} eq "Bearer $key", "$name: Authorization: Bearer";
    }
}

# ------------------------------------------------------------ models
for my $p (@KEYED, 'ollama') {
    subtest "$p: GET /{id}/models refreshes supportedModels" => sub {
        my $before = row($ID{$p});
        mock_reset();
        my ($res, $d) = call(GET => M . "/$ID{$p}/models", token => $tok);
        is $res->code, 200, 'status 200';
        no_store($res, 'models');
        my $want = $p eq 'anthropic' ? ['claude-mock'] : [qw(mock-model-a mock-model-b)];
        is_deeply fresh($res), { supportedModels => $want }, 'exactly {"supportedModels": [...]}';
        is_deeply detail($tok, $ID{$p})->{supportedModels}, $want, 'the detail shows them afterwards';
        my $cap = take_captured();
        is scalar @$cap, 1, 'one request to the provider';
        is $cap->[0]{method}, 'GET', 'GET';
        is $cap->[0]{path}, ($p eq 'ollama' ? '/ollama/v1' : $BASE{$p}) . '/models', 'its model list';
        key_rides_ok($p, $cap->[0] || {}, $KEY{$p}, 'models');
        my $after = row($ID{$p});
        is $after->{current_usage}, $before->{current_usage}, 'no usage counted';
        ok no_secret_in($res->as_string, @SECRETS), 'no key in the answer';
    };
}

subtest 'models: the list replaces what was stored' => sub {
    my ($r) = call(PUT => M . "/$ID{openai}", token => $tok, json => { supportedModels => ['old-1', 'old-2', 'old-3'] });
    is $r->code, 200, 'supportedModels set by hand';
    my ($res) = call(GET => M . "/$ID{openai}/models", token => $tok);
    is $res->code, 200, 'status 200';
    is_deeply detail($tok, $ID{openai})->{supportedModels}, [qw(mock-model-a mock-model-b)], 'replaced';
};

subtest 'models with a key the provider refuses: an upstream error, nothing stored' => sub {
    my ($r) = call(PUT => M . "/$BADID{openai}", token => $tok2, json => { supportedModels => ['keep-me'] });
    my ($res) = call(GET => M . "/$BADID{openai}/models", token => $tok2);
    is_error($res, 502, 'UPSTREAM_FAILED', 'status 502');
    is_deeply detail($tok2, $BADID{openai})->{supportedModels}, ['keep-me'], 'supportedModels untouched';
    ok no_secret_in($res->as_string, @SECRETS), 'the quoted key is not passed on';
};

subtest 'models: unreachable provider, unknown id, other user, no session' => sub {
    my ($res) = call(GET => "/unreachable/ai-providers/$ID{openai}/models", token => $tok);
    is_error($res, 502, 'UPSTREAM_FAILED', 'unreachable: 502');
    mock_reset();
    ($res) = call(GET => M . '/' . rand_uuid() . '/models', token => $tok);
    is_error($res, 404, 'PROVIDER_NOT_FOUND', 'unknown id: 404');
    ($res) = call(GET => M . "/$BADID{openai}/models", token => $tok);
    is_error($res, 404, 'PROVIDER_NOT_FOUND', "another user's: 404");
    ($res) = call(GET => M . "/$ID{openai}/models");
    is_error($res, 401, 'UNAUTHORIZED', 'no session: 401');
    ($res) = call(POST => M . "/$ID{openai}/models", token => $tok, json => {});
    is_error($res, 405, 'METHOD_NOT_ALLOWED', 'POST: 405');
    is scalar @{ take_captured() }, 0, 'none of these reached the provider';
};

# ------------------------------------------------------------ verify
my %VERIFY_PATH = (openai => 'GET /openai/v1/models', openrouter => 'GET /openrouter/api/v1/key',
                   groq => 'GET /groq/openai/v1/models', gemini => 'GET /gemini/v1beta/models',
                   cohere => 'POST /cohere/v1/check-api-key', anthropic => 'GET /anthropic/v1/models',
                   ollama => 'GET /ollama/api/version');

for my $p (@KEYED, 'ollama') {
    subtest "$p: POST /{id}/verify with a good key" => sub {
        my $before = row($ID{$p});
        mock_reset();
        my ($res) = call(POST => M . "/$ID{$p}/verify", token => $tok);
        is $res->code, 200, 'status 200';
        no_store($res, 'verify');
        my $d = fresh($res) || {};
        if ($p eq 'openrouter') {
            is_deeply field_set($d), [qw(limit status usage valid)], '{valid, status, limit, usage}';
            is $d->{limit}, 100, "limit: the key's own limit (100)";
            is $d->{usage}, 12.5, "usage: the key's own usage (12.5)";
        }
        else {
            is_deeply field_set($d), [qw(status valid)], 'exactly {valid, status}';
        }
        is_true $d->{valid}, 'valid: true';
        is jtype($d->{status}), 'int', 'status is an integer';
        is $d->{status}, 200, 'status 200';
        my $cap = take_captured();
        is scalar @$cap, 1, 'one request to the provider';
        my ($pathonly) = ($cap->[0]{path} // '') =~ /\A([^?]*)/;
        is(($cap->[0]{method} // '') . " $pathonly", $VERIFY_PATH{$p}, "the provider's cheapest check: $VERIFY_PATH{$p}");
        ok(($cap->[0]{path} // '') !~ /[?&]key=/, 'no key= in the query');
        if ($p eq 'gemini') {
            ok defined $cap->[0]{headers}{'x-goog-api-key'} && $cap->[0]{headers}{'x-goog-api-key'} eq $KEY{$p},
               'gemini native: x-goog-api-key';
        }
        else {
            key_rides_ok($p, $cap->[0] || {}, $KEY{$p}, 'verify');
        }
        my $after = row($ID{$p});
        is $after->{current_usage}, $before->{current_usage}, 'no usage counted';
        ok no_secret_in($res->as_string, @SECRETS), 'no key in the answer';
    };
}

for my $p (@KEYED) {
    subtest "$p: POST /{id}/verify with a key the provider refuses" => sub {
        mock_reset();
        my ($res) = call(POST => M . "/$BADID{$p}/verify", token => $tok2);
        is $res->code, 200, '200: the check itself worked';
        my $d = fresh($res) || {};
        is_false $d->{valid}, 'valid: false';
        is $d->{status}, 401, "status: the provider's 401";
        my %f = map { $_ => 1 } @{ field_set($d) };
        delete @f{qw(valid status)};
        delete @f{qw(limit usage)} if $p eq 'openrouter';
        is_deeply [ sort keys %f ], [], 'no other fields';
        ok no_secret_in($res->as_string, @SECRETS), 'no key in the answer';
        is scalar @{ take_captured() }, 1, 'one request to the provider';
    };
}

subtest 'verify: unreachable, unknown id, method' => sub {
    my ($res) = call(POST => "/unreachable/ai-providers/$ID{openai}/verify", token => $tok);
    is_error($res, 502, 'UPSTREAM_FAILED', 'unreachable: 502');
    ($res) = call(POST => M . '/' . rand_uuid() . '/verify', token => $tok);
    is_error($res, 404, 'PROVIDER_NOT_FOUND', 'unknown id: 404');
    ($res) = call(GET => M . "/$ID{openai}/verify", token => $tok);
    is_error($res, 405, 'METHOD_NOT_ALLOWED', 'GET: 405');
};

# ------------------------------------------------------------ AIProvVerifyKeys On
my $V = '/verified/ai-providers';
subtest 'AIProvVerifyKeys On: a key the provider refuses is 400 INVALID_API_KEY, no row' => sub {
    my $u = make_user('pxchk-verified');
    my $t = session($u);
    for my $p (@KEYED) {
        my $bad = bad_key($p);
        push @SECRETS, $bad;
        mock_reset();
        my $rows = count_rows();
        my ($res) = call(POST => $V, token => $t, json => { provider => $p, apiKey => $bad });
        is_error($res, 400, 'INVALID_API_KEY', "$p: REJECT key refused");
        is count_rows(), $rows, "$p: no row written";
        my $cap = take_captured();
        is scalar @$cap, 1, "$p: the key was checked with the provider";
        key_rides_ok($p, $cap->[0] || {}, $bad, "$p check");
        ok no_secret_in($res->as_string, $bad), "$p: the key is not in the answer";
    }
    for my $p (@KEYED, 'ollama') {
        my $good = good_key($p);
        push @SECRETS, $good if $good;
        mock_reset();
        my $rows = count_rows();
        my %b = (provider => $p);
        $b{apiKey} = $good if $good;
        $b{apiUrl} = 'http://127.0.0.1:' . mock_port() . '/ollama' if $p eq 'ollama';
        my $id = create_ok($V, $t, \%b, "$p: a good key is accepted (201)");
        is count_rows(), $rows + 1, "$p: one row";
        is scalar @{ take_captured() }, 1, "$p: checked with the provider first";
        if ($id && $good) {
            is row($id)->{key_hash}, sha256_hex($good), "$p: the row holds that key";
        }
    }
};

subtest 'AIProvVerifyKeys Off (the default, /api): no call to the provider on create' => sub {
    my $u = make_user('pxchk-unverified');
    my $t = session($u);
    my $bad = bad_key('openai');
    push @SECRETS, $bad;
    mock_reset();
    create_ok(M, $t, { provider => 'openai', apiKey => $bad }, 'a REJECT key is stored unchecked');
    is scalar @{ take_captured() }, 0, 'nothing sent to the provider';
};

subtest 'AIProvVerifyKeys On, provider unreachable: the key cannot be checked, no row' => sub {
    # /verified points at the mock; reach the closed port by an Ollama apiUrl
    my $u = make_user('pxchk-verified-down');
    my $t = session($u);
    my $rows = count_rows();
    my ($res) = call(POST => $V, token => $t, json => { provider => 'ollama', apiUrl => 'http://127.0.0.1:1' });
    is_error($res, 502, 'UPSTREAM_FAILED', 'status 502');
    is count_rows(), $rows, 'no row';
};

subtest 'no key in any URL, answer or the error log' => sub {
    ok scalar @all_captured > 0, 'requests were captured';
    is scalar(grep { !no_secret_in($_->{path} // '', @SECRETS) } @all_captured), 0, 'no key in a URL';
    is scalar(grep { !no_secret_in($_->as_string, @SECRETS) } @responses), 0, 'no key in an answer';
    ok no_secret_in(error_log(), @SECRETS), 'no key in the error log';
};

done_testing();
