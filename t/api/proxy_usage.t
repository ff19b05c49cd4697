# The metered proxy, what is counted: the tokens each provider reports, in a
# plain answer and in a stream, are added to current_usage exactly once:
#  - OpenAI shape: "usage" (the module adds stream_options.include_usage to
#    streams for openai, groq and gemini when the client did not ask; never for
#    openrouter, which always reports, nor cohere, which refuses the field);
#  - Groq's x_groq.usage; Anthropic's message_start + cumulative message_delta;
#    Ollama's native prompt_eval_count + eval_count;
#  - an answer without usage counts nothing but stamps lastUsedAt;
#  - concurrent calls all count (the addition is atomic).
# Every call uses its own token counts (mock_prompt_tokens/_completion_tokens)
# so a count taken twice, or the wrong field, shows.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use lib 't/lib', 't/fixtures';
use AiprovTest;
use ApiAssert;
use JSON::PP ();
use LWP::UserAgent ();
use HTTP::Request ();
use POSIX ();
use Time::HiRes qw(time sleep);

my $JSON = JSON::PP->new->utf8->canonical;

sub captured { mock_captured() }

my %KEY = test_keys('pxuse');
my @SECRETS = values %KEY;

reset_db();
my $user = make_user('pxuse-user');
my $tok  = session($user);

my %ID;
for my $p (qw(openai openrouter groq gemini cohere anthropic ollama)) {
    my %b = (provider => $p, usageLimit => 1_000_000);
    $b{apiKey} = $KEY{$p} if $KEY{$p};
    $b{apiUrl} = 'http://127.0.0.1:' . mock_port() . '/ollama' if $p eq 'ollama';
    $ID{$p} = create_ok(M, $tok, \%b, "create $p") // rand_uuid();
}

my @responses;
sub detail {
    my $id = shift;
    my ($res, $d) = api(GET => M . "/$id", token => $tok);
    ($d || {})->{provider} || {};
}
sub usage_of { my $r = row(shift); $r ? $r->{current_usage} : undef }

# proxy($provider, $path, body => $string | json => {...}) -> ($res, $captured_request)
sub proxy {
    my ($p, $path, %o) = @_;
    mock_reset();
    my ($res) = api(POST => M . "/$ID{$p}/proxy/$path", token => $tok, %o);
    push @responses, $res;
    my $cap = captured();
    ($res, $cap->[-1] || {}, scalar @$cap);
}

# One counted call: the status, that one request went out, and the exact delta
# both in the database and in the API's currentUsage/usageRemaining.
sub counts {
    my ($p, $path, $want, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $before = usage_of($ID{$p});
    my $t0 = time;
    my ($res, $cap, $n) = proxy($p, $path, %o);
    subtest $name => sub {
        is $res->code, 200, 'the provider answered 200 through the proxy'
            or diag 'got ' . $res->code . ' ' . substr($res->content, 0, 300);
        is $n, 1, 'one request reached the provider';
        is usage_of($ID{$p}) - $before, $want, "current_usage grew by exactly $want";
        my $d = detail($ID{$p});
        is $d->{currentUsage}, usage_of($ID{$p}), 'currentUsage in the API agrees';
        is $d->{usageRemaining}, 1_000_000 - usage_of($ID{$p}), 'usageRemaining follows';
        my $lu = ts_epoch($d->{lastUsedAt});
        ok defined $lu && $lu >= int($t0) - 1 && $lu <= time + 1, 'lastUsedAt is now';
        ok no_secret_in($res->content, @SECRETS), 'no key in the answer';
    };
    ($res, $cap);
}

sub sse_data {    # the data: payloads of an event stream, decoded where JSON
    my $text = shift;
    [ map { my $x = $_; $x eq '[DONE]' ? $x : (eval { $JSON->decode($x) } // "?$x") }
      ($text =~ /^data: ?(.*?)\r?$/mg) ];
}

sub cap_json { my $c = shift; eval { $JSON->decode($c->{body} // '') } || {} }

# ------------------------------------------------------------ OpenAI shape
counts(openai => 'chat/completions', 18, 'openai, plain: usage.total_tokens',
       json => { model => 'gpt-x', mock_prompt_tokens => 7, mock_completion_tokens => 11 });

{
    my $body = $JSON->encode({ model => 'gpt-x', stream => JSON::PP::true, messages => [{ role => 'user', content => 'x' }],
                               temperature => 0.5, mock_prompt_tokens => 13, mock_completion_tokens => 8,
                               mock_delay_ms => 0 });
    my ($res, $cap) = counts(openai => 'chat/completions', 21,
                             'openai, stream, the client did not ask for usage: the module asks', body => $body);
    subtest 'openai stream: what was forwarded and answered' => sub {
        my $j = cap_json($cap);
        ok JSON::PP::is_bool($j->{stream_options}{include_usage}) && $j->{stream_options}{include_usage},
           'stream_options.include_usage: true added';
        my %orig = %{ $JSON->decode($body) };
        delete $j->{stream_options};
        is_deeply $j, \%orig, 'every other field forwarded unchanged';
        like $res->header('Content-Type') // '', qr{\Atext/event-stream}i, 'text/event-stream';
        my $ev = sse_data($res->content);
        is join('', map { ref $_ ? ($_->{choices}[0]{delta}{content} // '') : '' } @$ev), 'Hello from mock',
           'the content passed through';
        is $ev->[-1], '[DONE]', 'the stream ends with [DONE]';
        is scalar(grep { ref $_ && $_->{usage} } @$ev), 1, 'the client sees the usage event too';
    };
}
{
    my $body = $JSON->encode({ model => 'gpt-x', stream => JSON::PP::true,
                               stream_options => { include_usage => JSON::PP::true },
                               mock_prompt_tokens => 2, mock_completion_tokens => 9, mock_delay_ms => 0 });
    my (undef, $cap) = counts(openai => 'chat/completions', 11,
                              'openai, stream, the client asked for usage: counted once', body => $body);
    ok defined $cap->{body} && $cap->{body} eq $body, 'a body that already asks is forwarded byte for byte';
}
{
    my (undef, $cap) = counts(openai => 'chat/completions', 17,
        'openai, stream, stream_options without include_usage: the module adds it',
        json => { stream => JSON::PP::true, stream_options => { foo => 'bar' },
                  mock_prompt_tokens => 10, mock_completion_tokens => 7, mock_delay_ms => 0 });
    my $j = cap_json($cap);
    ok $j->{stream_options}{include_usage} && $j->{stream_options}{foo} eq 'bar',
       'include_usage added beside the client\'s own stream_options';
}

{
    my (undef, $cap) = counts(groq => 'chat/completions', 23, 'groq, stream: the module asks, counted once',
        json => { stream => JSON::PP::true, mock_prompt_tokens => 20, mock_completion_tokens => 3, mock_delay_ms => 0 });
    ok cap_json($cap)->{stream_options}{include_usage}, 'groq: include_usage added';
}
counts(groq => 'chat/completions', 6, 'groq, plain', json => { mock_prompt_tokens => 1, mock_completion_tokens => 5 });
# "stream": 1 is a stream to the mock but not JSON true to the module, which
# then leaves the body alone: the only way to get Groq's x_groq.usage through.
{
    my ($res, $cap) = counts(groq => 'chat/completions', 31, "groq, stream without include_usage: x_groq.usage",
        json => { stream => 1, mock_prompt_tokens => 30, mock_completion_tokens => 1, mock_delay_ms => 0 });
    ok !exists cap_json($cap)->{stream_options}, 'no stream_options was added (stream is not JSON true)';
    like $res->content, qr/"x_groq"/, 'the answer carried x_groq.usage';
}

{
    my (undef, $cap) = counts(gemini => 'chat/completions', 9, 'gemini, stream: the module asks',
        json => { stream => JSON::PP::true, mock_prompt_tokens => 4, mock_completion_tokens => 5, mock_delay_ms => 0 });
    ok cap_json($cap)->{stream_options}{include_usage}, 'gemini: include_usage added';
}
counts(gemini => 'chat/completions', 14, 'gemini, plain', json => { mock_prompt_tokens => 6, mock_completion_tokens => 8 });

{
    my $body = $JSON->encode({ model => 'or-x', stream => JSON::PP::true, mock_prompt_tokens => 15,
                               mock_completion_tokens => 12, mock_delay_ms => 0 });
    my (undef, $cap) = counts(openrouter => 'chat/completions', 27,
                              'openrouter, stream: reported without asking', body => $body);
    ok defined $cap->{body} && $cap->{body} eq $body, 'openrouter: body forwarded unchanged (no stream_options)';
}
counts(openrouter => 'chat/completions', 19, 'openrouter, plain',
       json => { mock_prompt_tokens => 9, mock_completion_tokens => 10 });

counts(cohere => 'chat/completions', 25, 'cohere, plain',
       json => { mock_prompt_tokens => 12, mock_completion_tokens => 13 });
{
    my $body = $JSON->encode({ stream => JSON::PP::true, mock_prompt_tokens => 40, mock_completion_tokens => 2,
                               mock_delay_ms => 0 });
    my $before = usage_of($ID{cohere});
    my $stamp_before = row($ID{cohere})->{last_used_at};
    sleep 1.1;    # lastUsedAt has one-second resolution
    my ($res, $cap, $n) = proxy(cohere => 'chat/completions', body => $body);
    subtest 'cohere, stream: never asked (Cohere refuses stream_options), nothing reported, nothing counted' => sub {
        is $res->code, 200, '200: the module did not add stream_options (Cohere would refuse it)'
            or diag 'got ' . $res->code . ' ' . substr($res->content, 0, 200);
        is $n, 1, 'one request forwarded';
        ok defined $cap->{body} && $cap->{body} eq $body, 'body forwarded unchanged';
        is usage_of($ID{cohere}), $before, 'current_usage unchanged';
        my $stamp = row($ID{cohere})->{last_used_at};
        ok defined $stamp && (!defined $stamp_before || $stamp ne $stamp_before),
           'last_used_at still moved (a call without usage is not silent)';
        like $res->content, qr/\[DONE\]/, 'the stream passed through to its end';
    };
}

# ------------------------------------------------------------ Anthropic
counts(anthropic => 'messages', 33, 'anthropic, plain: input_tokens + output_tokens',
       json => { model => 'claude-x', max_tokens => 5, mock_prompt_tokens => 21, mock_completion_tokens => 12 });
{
    my ($res) = counts(anthropic => 'messages', 54,
        'anthropic, stream: message_start input + message_delta output (cumulative, not added to the 1 of message_start)',
        json => { model => 'claude-x', stream => JSON::PP::true, mock_prompt_tokens => 50,
                  mock_completion_tokens => 4, mock_delay_ms => 0 });
    my @events = $res->content =~ /^event: (\S+)/mg;
    is_deeply \@events, [qw(message_start content_block_start content_block_delta content_block_delta
                            content_block_stop message_delta message_stop)], 'every event passed through in order';
}

# ------------------------------------------------------------ Ollama
{
    my ($res) = counts(ollama => 'api/chat', 29, 'ollama native, stream (its default): prompt_eval_count + eval_count',
                       json => { model => 'mock:latest', mock_prompt_tokens => 17, mock_completion_tokens => 12,
                                 mock_delay_ms => 0 });
    like $res->header('Content-Type') // '', qr{\Aapplication/x-ndjson}i, 'application/x-ndjson';
    my @lines = grep { length } split /\n/, $res->content;
    is scalar @lines, 3, 'three NDJSON lines passed through';
}
counts(ollama => 'api/chat', 8, 'ollama native, stream false',
       json => { stream => JSON::PP::false, mock_prompt_tokens => 5, mock_completion_tokens => 3 });
counts(ollama => 'chat/completions', 35, 'ollama /v1, plain',
       json => { mock_prompt_tokens => 30, mock_completion_tokens => 5 });
counts(ollama => 'chat/completions', 37, 'ollama /v1, stream with the client asking for usage',
       json => { stream => JSON::PP::true, stream_options => { include_usage => JSON::PP::true },
                 mock_prompt_tokens => 36, mock_completion_tokens => 1, mock_delay_ms => 0 });

# ------------------------------------------------------------ no usage
for my $case ([openai => 'chat/completions', {}], [openai => 'chat/completions', { stream => JSON::PP::true, mock_delay_ms => 0 }],
              [anthropic => 'messages', {}], [ollama => 'api/chat', { mock_delay_ms => 0 }]) {
    my ($p, $path, $extra) = @$case;
    my $name = "$p " . ($extra->{stream} || $p eq 'ollama' ? 'stream' : 'plain');
    my $before = usage_of($ID{$p});
    my $stamp_before = row($ID{$p})->{last_used_at};
    sleep 1.1;
    my ($res) = proxy($p, $path, json => { %$extra, mock_fail => 'nousage', mock_prompt_tokens => 99 });
    subtest "$name without usage: nothing counted, lastUsedAt stamped" => sub {
        is $res->code, 200, 'status 200';
        is usage_of($ID{$p}), $before, 'current_usage unchanged';
        my $stamp = row($ID{$p})->{last_used_at};
        ok defined $stamp && (!defined $stamp_before || $stamp ne $stamp_before), 'last_used_at moved';
    };
}
{
    my $before = usage_of($ID{openai});
    my ($res) = proxy(openai => 'chat/completions', json => { mock_fail => 'garbage' });
    is $res->code, 200, 'a 200 that is not JSON passes through';
    is $res->content, 'not json', 'as it came';
    is usage_of($ID{openai}), $before, 'and counts nothing';
}

# ------------------------------------------------------------ sums and concurrency
subtest 'the totals are the sums of the calls' => sub {
    my %want = (openai => 18 + 21 + 11 + 17, groq => 23 + 6 + 31, gemini => 9 + 14,
                openrouter => 27 + 19, cohere => 25, anthropic => 33 + 54, ollama => 29 + 8 + 35 + 37);
    for my $p (sort keys %want) {
        is usage_of($ID{$p}), $want{$p}, "$p: current_usage $want{$p}";
        is detail($ID{$p})->{currentUsage}, $want{$p}, "$p: currentUsage $want{$p}";
    }
};

# N calls at once on one row: each adds its own, none is lost.
sub burst {
    my ($n, $id, $body) = @_;
    my ($port) = Apache::TestRequest::hostport() =~ /:(\d+)\z/;
    my $url = "http://127.0.0.1:$port" . M . "/$id/proxy/chat/completions";
    my $start = time + 0.5;
    my @kids;
    for my $i (1 .. $n) {
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            close $r;
            my $ua = LWP::UserAgent->new(timeout => 60, keep_alive => 0);
            my $req = HTTP::Request->new(POST => $url, [ Authorization => "Bearer $tok",
                                                          'Content-Type' => 'application/json' ], $body);
            sleep($start - time) if $start > time;
            my $res = $ua->request($req);
            print {$w} $res->code, "\n";
            close $w;
            POSIX::_exit(0);
        }
        close $w;
        push @kids, [$pid, $r];
    }
    my @codes;
    for (@kids) {
        my ($pid, $r) = @$_;
        my $line = <$r>;
        close $r;
        waitpid $pid, 0;
        chomp($line //= 'none');
        push @codes, $line;
    }
    @codes;
}

for my $stream (0, 1) {
    my $before = usage_of($ID{openai});
    mock_reset();
    my @codes = burst(8, $ID{openai}, $JSON->encode({ ($stream ? (stream => JSON::PP::true, mock_delay_ms => 50) : ()),
                                                    mock_prompt_tokens => 3, mock_completion_tokens => 4 }));
    subtest '8 concurrent ' . ($stream ? 'streamed' : 'plain') . ' calls: all counted' => sub {
        is_deeply \@codes, [ (200) x 8 ], 'all eight answered 200';
        is scalar @{ captured() }, 8, 'eight requests reached the provider';
        is usage_of($ID{openai}) - $before, 8 * 7, 'current_usage grew by exactly 8 x 7';
    };
}

subtest 'no key in any answer or in the error log' => sub {
    my @leaky = grep { !no_secret_in($_->as_string, @SECRETS) } @responses;
    is scalar @leaky, 0, 'no answer holds a key';
    ok no_secret_in(error_log(), @SECRETS), 'the error log holds no key';
};

done_testing();
