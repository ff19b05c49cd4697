# The metered proxy, what goes out: each provider's key rides the provider's
# own way (Bearer; Gemini x-goog-api-key + Bearer; Anthropic x-api-key +
# anthropic-version; nothing for a keyless Ollama), the client's credentials,
# cookies and other headers stay behind, the path, query, method and body are
# forwarded as sent, keys never ride in a URL, and dot segments in the path
# are refused before anything is forwarded.
#
# Needs the loopback mock (t/mock/upstream.pl) that t/TEST.PL starts and
# t/conf/extra.conf.in points every provider at (AIProvProviderURL), with
# AiprovTest's mock_* hooks. Keys are compared with index()/eq, never printed.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use lib 't/lib', 't/fixtures';
use AiprovTest;
use ApiAssert;
use IO::Select ();
use IO::Socket::INET ();
use JSON::PP ();
use Time::HiRes qw(time);

my $JSON = JSON::PP->new->utf8->canonical;

sub captured { mock_captured() }

# Where t/mock/README.md puts each provider's API.
my %BASE = (openai => '/openai/v1', openrouter => '/openrouter/api/v1', groq => '/groq/openai/v1',
            gemini => '/gemini/v1beta/openai', cohere => '/cohere/compatibility/v1',
            anthropic => '/anthropic/v1', ollama => '/ollama');
my @PROVIDERS = qw(openai openrouter groq gemini cohere anthropic ollama);

# What a proxied call may carry to the provider: curl's own, the body's, the key's.
my %ALLOWED_HEADER = map { $_ => 1 } qw(host user-agent accept content-type content-length
                                         authorization x-api-key anthropic-version x-goog-api-key);

my %KEY = test_keys('pxhdr');
my @SECRETS = values %KEY;

reset_db();
my $user = make_user('pxhdr-user');
my $tok  = session($user);
my $cookie_secret = TOKEN_MARK . '-cookie-' . rand_hex(8);

my %ID;
for my $p (@PROVIDERS) {
    my %b = (provider => $p);
    $b{apiKey} = $KEY{$p} if $KEY{$p};
    $b{apiUrl} = 'http://127.0.0.1:' . mock_port() . '/ollama' if $p eq 'ollama';
    $ID{$p} = create_ok(M, $tok, \%b, "create $p") // rand_uuid();
}

my @responses;    # every response of this file, checked for keys at the end
my @all_captured; # every request the mock saw, checked for keys in URLs at the end
sub call {
    my ($res, $d) = api(@_);
    push @responses, $res;
    ($res, $d);
}
sub take_captured {
    my $c = captured();
    push @all_captured, @$c;
    $c;
}

sub chat_path { my $p = shift; $p eq 'anthropic' ? 'messages' : 'chat/completions' }

sub has_header { my ($h, $n) = @_; exists $h->{$n} }

for my $p (@PROVIDERS) {
    subtest "$p: the key rides the provider's way, the client's credentials stay behind" => sub {
        mock_reset();
        my $body = $JSON->encode({ model => "m-$p", messages => [{ role => 'user', content => "hi $p" }],
                                   mock_prompt_tokens => 3, mock_completion_tokens => 4 });
        my ($res) = call(POST => M . "/$ID{$p}/proxy/" . chat_path($p), token => $tok, body => $body,
                         headers => { Cookie => "sid=$cookie_secret", 'X-Client-Note' => 'private-note',
                                      'X-Forwarded-For' => '203.0.113.9', 'Proxy-Authorization' => "Basic $cookie_secret",
                                      Accept => 'application/json' });
        is $res->code, 200, 'the provider answered 200 through the proxy'
            or diag 'got ' . $res->code . ' ' . substr($res->content, 0, 300);
        no_store($res, 'proxied answer');
        my $cap = take_captured();
        is scalar @$cap, 1, 'exactly one request reached the provider';
        my $c = $cap->[0] || { headers => {} };
        my $h = $c->{headers} || {};
        is $c->{method}, 'POST', 'method POST';
        is $c->{path}, "$BASE{$p}/" . ($p eq 'ollama' ? 'v1/' : '') . chat_path($p),
           'path is the base (+ /v1 for Ollama) + the path after /proxy/';
        ok defined $c->{body} && $c->{body} eq $body, 'body forwarded byte for byte';
        is $h->{'content-type'}, 'application/json', 'Content-Type forwarded';
        is $h->{accept}, 'application/json', 'Accept forwarded';

        if ($p eq 'anthropic') {
            ok defined $h->{'x-api-key'} && $h->{'x-api-key'} eq $KEY{$p}, 'x-api-key is the stored key';
            is $h->{'anthropic-version'}, '2023-06-01', 'anthropic-version: 2023-06-01';
            ok !has_header($h, 'authorization'), 'no Authorization header';
            ok !has_header($h, 'x-goog-api-key'), 'no x-goog-api-key';
        }
        elsif ($p eq 'ollama') {
            ok !has_header($h, 'authorization'), 'keyless Ollama: no Authorization header';
            ok !has_header($h, 'x-api-key') && !has_header($h, 'x-goog-api-key'), 'and no other key header';
        }
        elsif ($p eq 'gemini') {
            ok defined $h->{'x-goog-api-key'} && $h->{'x-goog-api-key'} eq $KEY{$p},
               'x-goog-api-key is the stored key';
            ok defined $h->{authorization} && $h->{authorization} eq "Bearer $KEY{$p}",
               'Authorization: Bearer <stored key> as well';
            ok !has_header($h, 'x-api-key'), 'no x-api-key';
        }
        else {
            ok defined $h->{authorization} && $h->{authorization} eq "Bearer $KEY{$p}",
               'Authorization: Bearer <stored key>';
            ok !has_header($h, 'x-api-key') && !has_header($h, 'x-goog-api-key'), 'no other key header';
        }
        ok !has_header($h, 'anthropic-version'), 'anthropic-version only for Anthropic' unless $p eq 'anthropic';
        ok !has_header($h, 'cookie'), "the client's Cookie is not forwarded";
        ok !has_header($h, 'proxy-authorization'), "the client's Proxy-Authorization is not forwarded";
        ok !has_header($h, 'x-client-note') && !has_header($h, 'x-forwarded-for'),
           'other client headers are not forwarded';
        my $all = join "\n", map { "$_: " . ($h->{$_} // '') } sort keys %$h;
        ok index($all, TOKEN_MARK) < 0, "the client's session token and cookie appear in no header";
        my @extra = grep { !$ALLOWED_HEADER{$_} } sort keys %$h;
        is_deeply \@extra, [], 'no header beyond Host, User-Agent, Accept, Content-*, and the key';
        ok index($c->{path} // '', $KEY{$p} // "\0") < 0, 'the key is not in the URL' if $KEY{$p};
        ok no_secret_in($res->content, @SECRETS), 'the answer holds no key';
    };
}

subtest 'ollama: /v1 for the OpenAI-compatible API, /api/ passes as is (native)' => sub {
    mock_reset();
    my ($res) = call(POST => M . "/$ID{ollama}/proxy/api/chat", token => $tok,
                     json => { model => 'mock:latest', stream => JSON::PP::false,
                               messages => [{ role => 'user', content => 'hi' }] });
    is $res->code, 200, 'native chat answered 200';
    my $cap = take_captured();
    is scalar @$cap, 1, 'one request forwarded';
    is $cap->[0]{path}, '/ollama/api/chat', 'native path kept: /ollama/api/chat';
    ok !exists $cap->[0]{headers}{authorization}, 'no Authorization header';
    mock_reset();
    ($res) = call(GET => M . "/$ID{ollama}/proxy/models", token => $tok);
    is $res->code, 200, 'GET proxy/models answered 200';
    $cap = take_captured();
    is $cap->[0]{path}, '/ollama/v1/models', 'other paths go below /v1';
};

subtest 'method, query string and headers of a GET' => sub {
    mock_reset();
    my ($res, $d) = call(GET => M . "/$ID{openai}/proxy/models?limit=5&order=desc&x=a%20b", token => $tok,
                         headers => { Accept => 'application/json' });
    is $res->code, 200, 'status 200';
    is_deeply [ map { $_->{id} } @{ ($d || {})->{data} || [] } ], [qw(mock-model-a mock-model-b)],
              "the provider's answer passed through";
    my $cap = take_captured();
    is scalar @$cap, 1, 'one request forwarded';
    is $cap->[0]{method}, 'GET', 'method GET';
    is $cap->[0]{path}, '/openai/v1/models?limit=5&order=desc&x=a%20b', 'query string forwarded unchanged';
    ok !exists $cap->[0]{headers}{'content-type'}, 'no Content-Type invented for a GET';
    is $cap->[0]{body}, '', 'no body';
};

subtest 'any method is forwarded as it came' => sub {
    for my $m (qw(PUT PATCH DELETE)) {
        mock_reset();
        my ($res) = call($m => M . "/$ID{openai}/proxy/models", token => $tok,
                         ($m eq 'DELETE' ? () : (json => { x => 1 })));
        my $cap = take_captured();
        is scalar @$cap, 1, "$m: one request forwarded";
        is $cap->[0]{method}, $m, "$m: the provider saw $m";
        is $res->code, 405, "$m: the provider's 405 passed through";
    }
};

subtest "a client's own key-like headers never replace the stored key" => sub {
    mock_reset();
    my $fake = 'sk-TESTSECRET-client-supplied-' . rand_hex(4);
    my ($res) = call(POST => M . "/$ID{openai}/proxy/chat/completions", token => $tok,
                     json => { model => 'x' },
                     headers => { 'X-Api-Key' => $fake, 'X-Goog-Api-Key' => $fake, 'Anthropic-Version' => 'evil' });
    is $res->code, 200, 'status 200';
    my $h = (take_captured()->[0] || {})->{headers} || {};
    ok defined $h->{authorization} && $h->{authorization} eq "Bearer $KEY{openai}", 'the stored key went';
    my $all = join "\n", map { $_ // '' } values %$h;
    ok index($all, $fake) < 0, "the client's x-api-key / x-goog-api-key were not forwarded";
    ok !exists $h->{'anthropic-version'}, "the client's anthropic-version was not forwarded";
};

# ------------------------------------------------------------ dot segments
# Sent on a raw socket, so no client library normalises the path first.
sub raw_request {
    my ($method, $target, @headers) = @_;
    raw_request_body($method, $target, undef, @headers, ($method eq 'POST' ? 'Content-Length: 0' : ()));
}

# $body is sent as it is (already framed by the headers given)
sub raw_request_body {
    my ($method, $target, $body, @headers) = @_;
    my ($port) = Apache::TestRequest::hostport() =~ /:(\d+)\z/;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 10)
        or return { error => "connect: $!" };
    my $req = "$method $target HTTP/1.1\r\nHost: localhost:$port\r\nConnection: close\r\n";
    $req .= "$_\r\n" for @headers;
    $req .= "\r\n";
    $req .= $body if defined $body;
    print {$s} $req;
    my $sel = IO::Select->new($s);
    my ($buf, $deadline) = ('', time + 20);
    while ($sel->can_read($deadline - time > 0 ? $deadline - time : 0)) {
        my $n = sysread($s, my $d, 65536);
        last unless $n;
        $buf .= $d;
    }
    close $s;
    my ($head, $rbody) = split /\r\n\r\n/, $buf, 2;
    my ($status) = ($head // '') =~ m{\AHTTP/1\.\d (\d{3})};
    if (($head // '') =~ /^Transfer-Encoding:\s*chunked/mi) {
        my $out = '';
        $rbody //= '';
        while ($rbody =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $out .= substr($rbody, 0, $n, '');
            $rbody =~ s/\A\r\n//;
        }
        $rbody = $out;
    }
    { status => $status // 0, head => $head // '', body => $rbody // '' };
}

subtest 'dot segments after /proxy/ are refused (400) and nothing is forwarded' => sub {
    my $id = $ID{openai};
    # each stays below /proxy/ (or names no endpoint) once httpd has removed
    # the dot segments; "proxy/%2e%2e/models" would be GET /{id}/models itself
    my @paths = ("proxy/../x", "proxy/a/../models", "proxy/%2e%2e/x", "proxy/v1/%2E%2E/models",
                 "proxy/a/%2e%2e/models", "proxy/v1/.%2e/models", "proxy/v1/%2e./models", "proxy/models/..",
                 "proxy/models/%2e%2e", "proxy/./models/../../x", "proxy/a/b/%2e%2e/%2E%2e/models");
    for my $p (@paths) {
        for my $m (qw(GET POST)) {
            mock_reset();
            my $r = raw_request($m, M . "/$id/$p", "Authorization: Bearer $tok");
            is $r->{status}, 400, "$m .../$p: 400";
            my $d = eval { $JSON->decode($r->{body}) } || {};
            is $d->{error}, 'INVALID_REQUEST', "$m .../$p: INVALID_REQUEST";
            is scalar @{ take_captured() }, 0, "$m .../$p: nothing reached the provider";
            ok index($r->{body}, TOKEN_MARK) < 0, "$m .../$p: no token in the answer";
        }
    }
};

subtest 'a large body (2 MiB, above the 1 MiB of the JSON endpoints) is forwarded whole' => sub {
    mock_reset();
    my $body = $JSON->encode({ model => 'x', messages => [{ role => 'user', content => 'y' x (2 << 20) }],
                               mock_prompt_tokens => 1, mock_completion_tokens => 1 });
    my ($res) = call(POST => M . "/$ID{openai}/proxy/chat/completions", token => $tok, body => $body);
    is $res->code, 200, 'status 200';
    my $c = take_captured()->[0] || {};
    is length($c->{body} // ''), length $body, 'the provider got every byte';
    ok(($c->{body} // '') eq $body, 'unchanged');
};

subtest 'a chunked request body is forwarded whole' => sub {
    mock_reset();
    my $body = $JSON->encode({ model => 'chunked', messages => [{ role => 'user', content => 'z' x 5000 }] });
    my $chunked = join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) } unpack('(a1000)*', $body)) . "0\r\n\r\n";
    my $r = raw_request_body('POST', M . "/$ID{openai}/proxy/chat/completions", $chunked,
                             "Authorization: Bearer $tok", 'Content-Type: application/json',
                             'Transfer-Encoding: chunked');
    is $r->{status}, 200, 'status 200';
    my $c = take_captured()->[0] || {};
    ok(($c->{body} // '') eq $body, 'the provider got the body, de-chunked and whole');
    is $c->{headers}{'content-type'}, 'application/json', 'Content-Type forwarded';
};

# ------------------------------------------------------------ the end
subtest 'no key in any URL the providers saw, nor in any answer, nor in the error log' => sub {
    ok scalar @all_captured > 0, 'requests were captured';
    my @bad = grep { !no_secret_in($_->{path} // '', @SECRETS) } @all_captured;
    is scalar @bad, 0, 'no captured path or query holds a key';
    my @leaky = grep { !no_secret_in($_->as_string, @SECRETS, $cookie_secret) } @responses;
    is scalar @leaky, 0, 'no answer (head or body) holds a key or the cookie';
    ok no_secret_in(error_log(), @SECRETS, $cookie_secret), 'the error log holds no key and no cookie';
};

done_testing();
