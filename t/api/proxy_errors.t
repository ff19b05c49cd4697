# The metered proxy when things go wrong: a provider that cannot be reached
# (502 UPSTREAM_FAILED), that does not answer in time (504 UPSTREAM_TIMEOUT
# after AIProvUpstreamTimeout), that drops the connection before any byte
# (502); the provider's own error statuses (401, 429, 500) passed on with
# key-shaped text masked (the mock's 401 quotes the first 12 characters of
# the key, as OpenAI does); an inactive provider (403 PROVIDER_INACTIVE), an
# unknown or another user's id (404), no session (401). None of these counts
# any usage, and none lets a key reach the client or the error log.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use lib 't/lib', 't/fixtures';
use AiprovTest;
use ApiAssert;
use IO::Select ();
use IO::Socket::INET ();
use JSON::PP ();
use POSIX ();
use Socket qw(SOL_SOCKET SO_LINGER);
use Time::HiRes qw(time sleep);

my $JSON = JSON::PP->new->utf8->canonical;
sub captured { mock_captured() }

# Keys whose first 12 characters (what the mock's 401 quotes) are unique to
# this run, so a leak of the quote can be told from anything else.
my %KEY = test_keys('pxerr');
# the same, refused by the mock (they contain REJECT)
my %BAD = (
    openai     => 'sk-' . rand_hex(6) . 'REJECT-TESTSECRET-pxerr',
    openrouter => 'sk-or-v1-' . rand_hex(6) . 'REJECT-TESTSECRET',
    groq       => 'gsk_' . rand_hex(6) . 'REJECT_TESTSECRET',
    gemini     => 'AIza' . rand_hex(6) . 'REJECTTESTSECRET',
    # Cohere's keys have no prefix: 40 letters and digits
    cohere     => rand_hex(10) . 'REJECTTESTSECRET' . rand_hex(2),
    anthropic  => 'sk-ant-' . rand_hex(6) . 'REJECT-TESTSECRET',
);
my @SECRETS = (values %KEY, values %BAD);

reset_db();
my $user  = make_user('pxerr-user');
my $tok   = session($user);
my $other = make_user('pxerr-other');
my $tok2  = session($other);

my (%ID, %BADID);
for my $p (sort keys %KEY) {
    $ID{$p} = create_ok(M, $tok, { provider => $p, apiKey => $KEY{$p} }, "create $p") // rand_uuid();
    $BADID{$p} = create_ok(M, $tok2, { provider => $p, apiKey => $BAD{$p} }, "create $p with a refused key")
        // rand_uuid();
}

my @responses;
sub call {
    my ($res, $d) = api(@_);
    push @responses, $res;
    ($res, $d);
}
sub usage_of { my $r = row(shift); $r ? $r->{current_usage} : undef }
sub stamp_of { my $r = row(shift); $r ? $r->{last_used_at} : undef }

# my $check = counts_nothing($id, $name); ...call...; $check->(): the call
# added nothing to current_usage. With stamp => 1 (refused before anything
# was forwarded) last_used_at must not move either.
sub counts_nothing {
    my ($id, $name, %o) = @_;
    my ($u, $s) = (usage_of($id), stamp_of($id));
    return sub {
        local $Test::Builder::Level = $Test::Builder::Level + 1;
        is usage_of($id), $u, "$name: current_usage unchanged";
        is stamp_of($id), $s, "$name: last_used_at unchanged (never used)" if $o{stamp};
    };
}

my $chat = { model => 'x', messages => [{ role => 'user', content => 'hi' }],
             mock_prompt_tokens => 10, mock_completion_tokens => 10 };

# ------------------------------------------------------------ cannot reach, too slow
subtest 'unreachable provider: 502 UPSTREAM_FAILED, nothing counted' => sub {
    for my $p (qw(openai anthropic)) {
        my $check = counts_nothing($ID{$p}, $p);
        my $t0 = time;
        my ($res) = call(POST => "/unreachable/ai-providers/$ID{$p}/proxy/chat/completions",
                         token => $tok, json => $chat);
        is_error($res, 502, 'UPSTREAM_FAILED', "$p: 502");
        ok time - $t0 < 10, "$p: answered at once";
        $check->();
        ok index($res->content, '127.0.0.1:1') < 0, "$p: the upstream address is not shown to the client";
    }
    my $check = counts_nothing($ID{openai}, 'stream');
    my ($res) = call(POST => "/unreachable/ai-providers/$ID{openai}/proxy/chat/completions",
                     token => $tok, json => { %$chat, stream => JSON::PP::true });
    is_error($res, 502, 'UPSTREAM_FAILED', 'a stream request: 502 too');
    $check->();
};

subtest 'a provider that never answers: 504 UPSTREAM_TIMEOUT after AIProvUpstreamTimeout (2 s)' => sub {
    for my $stream (0, 1) {
        my $check = counts_nothing($ID{openai}, "stream=$stream");
        mock_reset();
        my $t0 = time;
        my ($res) = call(POST => "/short/ai-providers/$ID{openai}/proxy/chat/completions", token => $tok,
                         json => { %$chat, mock_fail => 'hang', ($stream ? (stream => JSON::PP::true) : ()) });
        my $took = time - $t0;
        is_error($res, 504, 'UPSTREAM_TIMEOUT', "stream=$stream: 504");
        ok $took >= 1.5 && $took < 8, sprintf('stream=%d: after about 2 s (%.1f s)', $stream, $took);
        is scalar @{ captured() }, 1, "stream=$stream: the request had gone out";
        $check->();
    }
};

# A listener of our own (an Ollama row's apiUrl) that reads the request and
# drops the connection without answering: with a reset (RST) or a plain close.
sub dropping_server {
    my $how = shift;
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16,
                                    Proto => 'tcp', ReuseAddr => 1) or die "listen: $!";
    my $port = $srv->sockport;
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $r;
        $w->autoflush(1);
        local $SIG{ALRM} = sub { POSIX::_exit(0) };
        alarm 60;
        while (my $c = $srv->accept) {
            my $buf = '';
            while ($buf !~ /\r\n\r\n/) { my $n = sysread($c, $buf, 4096, length $buf); last unless $n }
            my ($cl) = $buf =~ /^Content-Length:\s*(\d+)/mi;
            my $want = ($cl // 0) - (length($buf) - index($buf, "\r\n\r\n") - 4);
            while ($want > 0) { my $n = sysread($c, my $d, $want); last unless $n; $want -= $n }
            print {$w} "got\n";
            setsockopt($c, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0)) if $how eq 'reset';
            close $c;
        }
        POSIX::_exit(0);
    }
    close $w;
    close $srv;
    ($port, $pid, $r);
}

for my $how (qw(reset close)) {
    subtest "the provider drops the connection before any byte ($how): 502, nothing counted" => sub {
        my ($port, $pid, $seen) = dropping_server($how);
        my $id = create_ok(M, $tok, { provider => 'ollama', apiUrl => "http://127.0.0.1:$port", keyLabel => "drop $how" },
                           'an ollama row pointing at it');
        if ($id) {
            my $check = counts_nothing($id, $how);
            my ($res) = call(POST => M . "/$id/proxy/api/chat", token => $tok,
                             json => { model => 'm', stream => JSON::PP::false });
            is_error($res, 502, 'UPSTREAM_FAILED', "$how: 502");
            $check->();
            my $sel = IO::Select->new($seen);
            ok $sel->can_read(5) && scalar(<$seen>) eq "got\n", "$how: the request did reach the listener";
            call(DELETE => M . "/$id", token => $tok);
        }
        kill 'TERM', $pid;
        waitpid $pid, 0;
    };
}

# ------------------------------------------------------------ the provider's own errors
for my $p (qw(openai openrouter groq gemini cohere)) {
    subtest "$p: the provider's 401 passes through without the part of the key it quotes" => sub {
        my $check = counts_nothing($BADID{$p}, $p);
        mock_reset();
        my ($res) = call(POST => M . "/$BADID{$p}/proxy/chat/completions", token => $tok2, json => $chat);
        is $res->code, 401, '401 passed through';
        like $res->header('Content-Type') // '', qr{\Aapplication/json}i, 'its Content-Type passed through';
        no_store($res, '401');
        my $d = eval { $JSON->decode($res->content) } || {};
        is ref $d->{error}, 'HASH', "the provider's own error object (not ours)";
        is $d->{error}{code}, 'invalid_api_key', "the provider's code kept";
        like $d->{error}{message} // '', qr/\AIncorrect API key provided: /, "the provider's message kept";
        my $quote = substr($BAD{$p}, 0, 12);
        ok index($res->content, $quote) < 0, 'the first 12 characters of the key (the quote) are not shown';
        ok index($res->content, substr($quote, 6)) < 0, "nor the quote's last 6 characters";
        ok no_secret_in($res->as_string, @SECRETS), 'no key in the answer';
        is scalar @{ captured() }, 1, 'one request had gone out';
        $check->();
    };
}

subtest "anthropic: the provider's 401 passes through" => sub {
    my $check = counts_nothing($BADID{anthropic}, 'anthropic');
    my ($res) = call(POST => M . "/$BADID{anthropic}/proxy/messages", token => $tok2,
                     json => { model => 'c', max_tokens => 1 });
    is $res->code, 401, 'status 401';
    my $d = eval { $JSON->decode($res->content) } || {};
    is $d->{error}{type}, 'authentication_error', "Anthropic's error passed through";
    ok no_secret_in($res->as_string, @SECRETS), 'no key in the answer';
    $check->();
};

for my $case ([status429 => 429, qr/rate limited/], [status500 => 500, qr/upstream exploded/]) {
    my ($fail, $status, $msg) = @$case;
    subtest "the provider's $status passes through, nothing counted" => sub {
        for my $stream (0, 1) {
            my $check = counts_nothing($ID{openai}, "stream=$stream");
            my ($res) = call(POST => M . "/$ID{openai}/proxy/chat/completions", token => $tok,
                             json => { %$chat, mock_fail => $fail, ($stream ? (stream => JSON::PP::true) : ()) });
            is $res->code, $status, "stream=$stream: $status";
            like $res->content, $msg, "stream=$stream: the provider's body";
            my $d = eval { $JSON->decode($res->content) } || {};
            ok ref $d->{error} eq 'HASH', "stream=$stream: the provider's error, not one of ours"
                or diag $res->content;
            no_store($res, "$status");
            $check->();
        }
    };
}

# ------------------------------------------------------------ refused before forwarding
subtest 'inactive provider: 403 PROVIDER_INACTIVE, nothing forwarded, nothing counted' => sub {
    my ($r) = call(PUT => M . "/$ID{groq}", token => $tok, json => { isActive => JSON::PP::false });
    is $r->code, 200, 'switched off';
    for my $m (qw(GET POST DELETE)) {
        mock_reset();
        my $check = counts_nothing($ID{groq}, $m, stamp => 1);
        my ($res) = call($m => M . "/$ID{groq}/proxy/chat/completions", token => $tok,
                         ($m eq 'POST' ? (json => { %$chat, stream => JSON::PP::true }) : ()));
        is_error($res, 403, 'PROVIDER_INACTIVE', "$m: 403");
        is scalar @{ captured() }, 0, "$m: nothing reached the provider";
        $check->();
    }
    ($r) = call(PUT => M . "/$ID{groq}", token => $tok, json => { isActive => JSON::PP::true });
    mock_reset();
    my ($res) = call(POST => M . "/$ID{groq}/proxy/chat/completions", token => $tok, json => $chat);
    is $res->code, 200, 'switched on again: 200';
};

subtest 'unknown id, another user\'s id, no session: nothing forwarded' => sub {
    mock_reset();
    my ($res) = call(POST => M . '/' . rand_uuid() . '/proxy/chat/completions', token => $tok, json => $chat);
    is_error($res, 404, 'PROVIDER_NOT_FOUND', 'unknown id: 404');
    ($res) = call(POST => M . "/$BADID{openai}/proxy/chat/completions", token => $tok, json => $chat);
    is_error($res, 404, 'PROVIDER_NOT_FOUND', "another user's id: 404");
    ($res) = call(POST => M . "/$ID{openai}/proxy/chat/completions", json => $chat);
    is_error($res, 401, 'UNAUTHORIZED', 'no session: 401');
    ($res) = call(POST => M . "/$ID{openai}/proxy/chat/completions", json => $chat,
                  token => TOKEN_MARK . '-nope-' . rand_hex(4));
    is_error($res, 401, 'UNAUTHORIZED', 'unknown session: 401');
    ($res) = call(POST => M . '/not-a-uuid/proxy/chat/completions', token => $tok, json => $chat);
    is_error($res, 400, 'INVALID_REQUEST', 'an id that is not a UUID: 400');
    is scalar @{ captured() }, 0, 'nothing reached the provider';
};

subtest 'a key that no longer decrypts: 500 ENCRYPTION_FAILED, nothing forwarded' => sub {
    mock_reset();
    my ($res) = call(POST => "/wrongkey/ai-providers/$ID{openai}/proxy/chat/completions", token => $tok, json => $chat);
    is_error($res, 500, 'ENCRYPTION_FAILED', 'status 500');
    is scalar @{ captured() }, 0, 'nothing reached the provider';
};

# ------------------------------------------------------------ the end
subtest 'no key (nor the quoted part) in any answer or in the error log' => sub {
    my @quotes = map { substr($BAD{$_}, 0, 12) } sort keys %BAD;
    my @leaky = grep { !no_secret_in($_->as_string, @SECRETS, @quotes) } @responses;
    is scalar @leaky, 0, 'no answer holds a key';
    my $log = error_log();
    ok no_secret_in($log, @SECRETS), 'the error log holds no key';
    ok no_secret_in($log, @quotes), 'nor the part of a key a provider quoted';
};

done_testing();
