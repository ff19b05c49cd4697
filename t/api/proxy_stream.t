# The metered proxy streams: an event reaches the client as the provider sends
# it, not when the provider has finished (read on a raw socket, each event
# timestamped as it arrives, with mock_delay_ms between the mock's events);
# a provider that breaks off mid-stream leaves the client with a truncated
# chunked body (no last chunk), and a client that goes away stops the call to
# the provider.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use lib 't/lib', 't/fixtures';
use AiprovTest;
use ApiAssert;
use IO::Select ();
use IO::Socket::INET ();
use JSON::PP ();
use Time::HiRes qw(time sleep);

my $JSON = JSON::PP->new->utf8->canonical;

sub captured { mock_captured() }

my %KEY = test_keys('pxstream');
my @SECRETS = values %KEY;

reset_db();
my $user = make_user('pxstream-user');
my $tok  = session($user);
my %ID;
for my $p (qw(openai anthropic groq ollama)) {
    my %b = (provider => $p);
    $b{apiKey} = $KEY{$p} if $KEY{$p};
    $b{apiUrl} = 'http://127.0.0.1:' . mock_port() . '/ollama' if $p eq 'ollama';
    $ID{$p} = create_ok(M, $tok, \%b, "create $p") // rand_uuid();
}

# stream(path => ..., body => ..., delim => "\n\n" | "\n", stop => sub { $r } , timeout => s)
# A raw HTTP/1.1 request (keep-alive, so httpd must frame the body: chunked),
# read as it arrives. Returns {status, headers, body, complete (the last chunk
# came), eof, error, t_sent, events => [[time, text], ...]}.
sub stream {
    my %o = @_;
    my ($port) = Apache::TestRequest::hostport() =~ /:(\d+)\z/;
    my $r = { events => [], body => '', complete => 0, eof => 0, headers => {}, status => 0 };
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 10)
        or do { $r->{error} = "connect: $!"; return $r };
    my $body = $o{body} // '';
    my $req = "POST $o{path} HTTP/1.1\r\nHost: localhost:$port\r\nAuthorization: Bearer $tok\r\n"
            . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    my $delim = $o{delim} // "\n\n";
    $r->{t_sent} = time;
    print {$s} $req;
    my $sel = IO::Select->new($s);
    my ($buf, $evbuf, $head_done, $chunked) = ('', '', 0, 0);
    my $deadline = time + ($o{timeout} // 30);
    my $add = sub {
        my ($t, $data) = @_;
        $r->{body} .= $data;
        $evbuf .= $data;
        while ((my $i = index($evbuf, $delim)) >= 0) {
            push @{ $r->{events} }, [$t, substr($evbuf, 0, $i)];
            substr($evbuf, 0, $i + length $delim, '');
        }
    };
    READ: while (1) {
        my $left = $deadline - time;
        if ($left <= 0 || !$sel->can_read($left)) { $r->{error} = 'timeout'; last }
        my $n = sysread($s, my $data, 65536);
        if (!defined $n) { $r->{error} = "read: $!"; $r->{eof} = 1; last }
        if ($n == 0) { $r->{eof} = 1; last }
        my $now = time;
        $buf .= $data;
        if (!$head_done) {
            my $i = index($buf, "\r\n\r\n");
            next if $i < 0;
            my $head = substr($buf, 0, $i);
            substr($buf, 0, $i + 4, '');
            ($r->{status}) = $head =~ m{\AHTTP/1\.\d (\d{3})};
            for (split /\r\n/, $head) {
                $r->{headers}{lc $1} = $2 if /^([^:\s]+):\s*(.*)$/;
            }
            $r->{t_head} = $now;
            $head_done = 1;
            $chunked = ($r->{headers}{'transfer-encoding'} // '') =~ /chunked/i;
            $r->{chunked} = $chunked;
        }
        if ($chunked) {
            while ($buf =~ /\A([0-9a-fA-F]+)[^\r\n]*\r\n/) {
                my ($size, $hl) = (hex $1, $+[0]);
                if ($size == 0) {
                    if ($buf =~ /\A[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n/) { $r->{complete} = 1; last READ }
                    last;
                }
                last if length($buf) < $hl + $size + 2;
                $add->($now, substr($buf, $hl, $size));
                substr($buf, 0, $hl + $size + 2, '');
            }
        }
        else {
            $add->($now, $buf) if length $buf;
            $buf = '';
            my $cl = $r->{headers}{'content-length'};
            if (defined $cl && length($r->{body}) >= $cl) { $r->{complete} = 1; last }
        }
        if ($o{stop} && $o{stop}->($r)) { $r->{stopped} = 1; last }
    }
    $r->{t_end} = time;
    close $s;
    $r;
}

sub usage_of { my $r = row(shift); $r ? $r->{current_usage} : undef }

sub timing_ok {
    my ($r, $n, $gap, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        is $r->{status}, 200, 'status 200';
        ok $r->{chunked}, 'chunked: framed as it goes';
        ok $r->{complete}, 'the stream ended with its last chunk';
        is scalar @{ $r->{events} }, $n, "$n events arrived";
        my @t = map { $_->[0] } @{ $r->{events} };
        return unless @t == $n;
        ok $t[0] - $r->{t_sent} < 1.0, sprintf('the first event came %.2f s after the request (< 1 s)',
                                                $t[0] - $r->{t_sent});
        my $span = $t[-1] - $t[0];
        ok $span >= ($n - 1) * $gap * 0.75,
           sprintf('the last event came %.2f s after the first (the mock spaced them %.1f s apart)', $span, $gap);
        my @late = grep { $t[$_] - $t[$_ - 1] < $gap * 0.5 } 1 .. $#t;
        is_deeply \@late, [], 'each event arrived on its own, not batched with the next'
            or diag join ' ', map { sprintf '%.3f', $_ - $t[0] } @t;
    };
}

# ------------------------------------------------------------ timing
{
    my $r = stream(path => M . "/$ID{openai}/proxy/chat/completions",
                   body => $JSON->encode({ stream => JSON::PP::true, mock_delay_ms => 400 }));
    timing_ok($r, 5, 0.4, 'openai: 5 events (3 content, usage, [DONE]) 400 ms apart arrive one by one');
    like $r->{headers}{'content-type'} // '', qr{\Atext/event-stream}i, 'Content-Type: text/event-stream';
    like $r->{headers}{'cache-control'} // '', qr/no-store/i, 'Cache-Control: no-store';
    is $r->{events}[-1][1] // '', 'data: [DONE]', 'the last event is [DONE]';
    ok no_secret_in($r->{body} . join(' ', %{ $r->{headers} }), @SECRETS), 'no key in the stream';
}
{
    my $r = stream(path => M . "/$ID{anthropic}/proxy/messages",
                   body => $JSON->encode({ stream => JSON::PP::true, mock_delay_ms => 300, max_tokens => 5 }));
    timing_ok($r, 7, 0.3, 'anthropic: 7 events 300 ms apart arrive one by one');
    is_deeply [ map { $_->[1] =~ /\Aevent: (\S+)/ ? $1 : '?' } @{ $r->{events} } ],
              [qw(message_start content_block_start content_block_delta content_block_delta
                  content_block_stop message_delta message_stop)], 'in order, event: lines intact';
}
{
    my $r = stream(path => M . "/$ID{ollama}/proxy/api/chat", delim => "\n",
                   body => $JSON->encode({ model => 'mock:latest', mock_delay_ms => 400 }));
    timing_ok($r, 3, 0.4, 'ollama native NDJSON: 3 lines 400 ms apart arrive one by one');
    like $r->{headers}{'content-type'} // '', qr{\Aapplication/x-ndjson}i, 'Content-Type: application/x-ndjson';
    my $last = eval { $JSON->decode($r->{events}[-1][1] // '') } || {};
    ok $last->{done}, 'the last line is the done object';
}

# ------------------------------------------------------------ broken off
subtest 'the provider breaks off mid-stream: the client sees a truncated chunked body' => sub {
    mock_reset();
    my $before = usage_of($ID{openai});
    my $r = stream(path => M . "/$ID{openai}/proxy/chat/completions", timeout => 20,
                   body => $JSON->encode({ stream => JSON::PP::true, mock_fail => 'reset', mock_delay_ms => 100 }));
    is $r->{status}, 200, 'the head was 200 (it went out with the first event)';
    ok $r->{chunked}, 'chunked';
    is scalar @{ $r->{events} }, 1, 'the first event arrived';
    like $r->{events}[0][1] // '', qr/"Hel"/, 'it is the first content event';
    ok !$r->{complete}, 'no last chunk: the client can tell the answer is incomplete';
    ok $r->{eof}, 'the connection was closed';
    ok !$r->{error} || $r->{error} ne 'timeout', 'closed at once, not left hanging'
        or diag $r->{error};
    is usage_of($ID{openai}), $before, 'nothing reported, nothing counted';
    is scalar @{ captured() }, 1, 'one request had gone out';
};

subtest 'anthropic breaks off mid-stream: truncated too' => sub {
    my $r = stream(path => M . "/$ID{anthropic}/proxy/messages", timeout => 20,
                   body => $JSON->encode({ stream => JSON::PP::true, mock_fail => 'reset', mock_delay_ms => 100 }));
    is $r->{status}, 200, 'status 200 in the head';
    ok !$r->{complete}, 'no last chunk';
    ok $r->{eof}, 'the connection was closed';
};

subtest 'a plain answer cut short is never a complete 200' => sub {
    my $before = usage_of($ID{openai});
    my $r = stream(path => M . "/$ID{openai}/proxy/chat/completions", timeout => 20,
                   body => $JSON->encode({ mock_fail => 'reset', mock_prompt_tokens => 5 }));
    ok !($r->{status} == 200 && $r->{complete}), 'not a complete 200 answer';
    if ($r->{status} == 200) {
        ok $r->{eof} && !$r->{complete}, 'truncated: closed without the end of the body';
    }
    else {
        is $r->{status}, 502, 'or a 502';
        my $d = eval { $JSON->decode($r->{body}) } || {};
        is $d->{error}, 'UPSTREAM_FAILED', 'UPSTREAM_FAILED';
    }
    is usage_of($ID{openai}), $before, 'nothing counted';
};

# ------------------------------------------------------------ client gone
# Optional in the issue ("hard to observe"): the client reads the first event
# and hangs up; the module must stop reading the provider, so the usage event
# (the 4th, 3 x 1.5 s later) is never read: nothing is counted, and the
# module logs AIPROV00603 well before the mock would have finished (6 s).
subtest 'a client that goes away mid-stream stops the call to the provider' => sub {
    my $log0 = () = error_log() =~ /AIPROV00603/g;
    my $before = usage_of($ID{groq});
    my $t_close;
    my $r = stream(path => M . "/$ID{groq}/proxy/chat/completions", timeout => 20,
                   body => $JSON->encode({ stream => JSON::PP::true, mock_delay_ms => 1500,
                                           mock_prompt_tokens => 40, mock_completion_tokens => 2 }),
                   stop => sub { my $r = shift; return 0 unless @{ $r->{events} }; $t_close = time; 1 });
    ok $r->{stopped}, 'the client read the first event and hung up';
    my $seen;
    while (time - ($t_close // time) < 8) {
        my $n = () = error_log() =~ /AIPROV00603/g;
        if ($n > $log0) { $seen = time; last }
        sleep 0.1;
    }
    ok defined $seen, 'the module logged that the client went away (AIPROV00603)';
    ok defined $seen && $seen - $t_close < 4.0,
       sprintf('within %.1f s of the hang-up, before the stream would have ended', ($seen // 99) - ($t_close // 0));
    sleep 6 - (time - ($t_close // time)) if time - ($t_close // time) < 6;
    is usage_of($ID{groq}), $before, 'the usage event was never read: nothing counted';
};

subtest 'no key in the error log' => sub {
    ok no_secret_in(error_log(), @SECRETS), 'the error log holds no key';
};

done_testing();
