#!/usr/bin/perl
# Loopback mock of the services mod_aiprov talks to (OpenRouter OAuth PKCE and
# the AI providers' HTTP APIs), for the test suite on machines without internet.
# Core Perl only. See t/mock/README.md for the routes and test hooks.
#
#   perl t/mock/upstream.pl --port PORT --state DIR [--pidfile F] [--delay-ms N]
use strict;
use warnings;
use Digest::SHA qw(sha256);
use Encode ();
use Errno ();
use Fcntl qw(:flock O_WRONLY O_APPEND O_CREAT);
use File::Path qw(make_path);
use Getopt::Long qw(GetOptions);
use IO::Socket::INET ();
use JSON::PP ();
use MIME::Base64 qw(encode_base64 encode_base64url);
use POSIX qw(WNOHANG strftime);
use Time::HiRes qw(sleep time);

my %opt = (port => 0, 'delay-ms' => 0);
GetOptions(\%opt, 'port=i', 'state=s', 'pidfile=s', 'delay-ms=i')
    && defined $opt{state} or die "usage: $0 --port PORT --state DIR [--pidfile F] [--delay-ms N]\n";
my $STATE = $opt{state};
make_path("$STATE/captured", "$STATE/codes");

my $JSON       = JSON::PP->new->utf8->canonical;
my $MAX_BODY   = 32 << 20;     # well above the module's 1 MiB, so it is the module that refuses
my $MAX_HEAD   = 64 << 10;
my $CODE_TTL   = 600;          # OpenRouter codes live 10 minutes
my @BEHAVIORS  = qw(ok expired status500 garbage nokey slow huge badkey);
my %REASON = (100 => 'Continue', 200 => 'OK', 302 => 'Found', 400 => 'Bad Request',
              401 => 'Unauthorized', 403 => 'Forbidden', 404 => 'Not Found',
              405 => 'Method Not Allowed', 408 => 'Request Timeout', 413 => 'Payload Too Large',
              429 => 'Too Many Requests', 431 => 'Request Header Fields Too Large',
              500 => 'Internal Server Error');

# ---------------------------------------------------------------- routes
# OpenAI-compatible bases, by provider prefix (the module's AIProvProviderURL
# for provider X points at http://127.0.0.1:PORT/<base of X>).
my %OAI_BASE = (openai => '/openai/v1', openrouter => '/openrouter/api/v1',
                groq => '/groq/openai/v1', gemini => '/gemini/v1beta/openai',
                cohere => '/cohere/compatibility/v1', ollama => '/ollama/v1');

# [method, path regex, handler]; handlers get ($req) and answer through reply().
my @ROUTES = (
    [GET  => qr{^/_mock/health$},   sub { reply(shift, 200, 'text/plain', "ok\n") }],
    [GET  => qr{^/_mock/captured$}, \&mock_captured],
    [GET  => qr{^/_mock/last$},     \&mock_last],
    [POST => qr{^/_mock/reset$},    \&mock_reset],
    [GET  => qr{^/_mock/issued$},   \&mock_issued],
    [POST => qr{^/_mock/code$},     \&mock_code],
    [GET  => qr{^(?:/openrouter)?/auth$},             \&oauth_authorize],
    [POST => qr{^(?:/openrouter)?/api/v1/auth/keys$}, \&oauth_exchange],
    (map { my $p = $_; my $b = $OAI_BASE{$p};
           ([POST => qr{^\Q$b\E/chat/completions$}, provider($p, \&oai_chat)],
            [GET  => qr{^\Q$b\E/models$},           provider($p, \&oai_models)]) } sort keys %OAI_BASE),
    [GET  => qr{^/openrouter/api/v1/key$},   provider(openrouter => sub { send_json(@_, 200,
        { data => { label => 'mock', limit => 100, usage => 12.5, is_free_tier => JSON::PP::false } }) })],
    [POST => qr{^/cohere/v1/check-api-key$}, provider(cohere => sub { send_json(@_, 200,
        { valid => JSON::PP::true }) })],
    [GET  => qr{^/gemini/v1beta/models$},    provider(gemini_native => sub { send_json(@_, 200,
        { models => [{ name => 'models/gemini-mock' }] }) })],
    [POST => qr{^/anthropic/v1/messages$},   provider(anthropic => \&anthropic_messages)],
    [GET  => qr{^/anthropic/v1/models$},     provider(anthropic => sub { send_json(@_, 200,
        { data => [{ id => 'claude-mock', type => 'model' }] }) })],
    [POST => qr{^/ollama/api/chat$},         provider(ollama => \&ollama_chat)],
    [GET  => qr{^/ollama/api/version$},      provider(ollama => sub { send_json(@_, 200,
        { version => '0.0.0-mock' }) })],
    [GET  => qr{^/ollama/api/tags$},         provider(ollama => sub { send_json(@_, 200,
        { models => [{ name => 'mock:latest' }] }) })],
    [ANY  => qr{^/fast(?:/.*)?$},            provider(fast => sub { send_json(@_, 200,
        { id => 'fast', usage => { prompt_tokens => 1, completion_tokens => 1, total_tokens => 2 } }) })],
);

# ---------------------------------------------------------------- server
$SIG{PIPE} = 'IGNORE';    # a client that went away must not kill us; syswrite fails instead
my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $opt{port}, Proto => 'tcp',
                                Listen => 128, ReuseAddr => 1)
    or die "mock: cannot listen on 127.0.0.1:$opt{port}: $@\n";
my $PORT   = $srv->sockport;
my %kids;
$SIG{CHLD} = sub { while ((my $pid = waitpid(-1, WNOHANG)) > 0) { delete $kids{$pid} } };
$SIG{TERM} = $SIG{INT} = sub {
    kill 'TERM', keys %kids;
    unlink $opt{pidfile} if $opt{pidfile};
    exit 0;
};
if ($opt{pidfile}) { write_file($opt{pidfile}, "$$\n") }
$| = 1;
print "mock listening on 127.0.0.1:$PORT\n";
# nothing else goes to stdout; a starter reading it to EOF gets EOF now
open STDOUT, '>', '/dev/null' or die "mock: /dev/null: $!\n";

while (1) {
    my $c = $srv->accept;
    unless ($c) {
        next if $!{EINTR} || $!{ECONNABORTED};    # SIGCHLD interrupts accept
        warn "mock: accept: $!\n"; sleep 0.1; next;
    }
    # SIGCHLD blocked across fork: a child that exits at once is still forgotten
    my $mask = POSIX::SigSet->new(POSIX::SIGCHLD());
    POSIX::sigprocmask(POSIX::SIG_BLOCK(), $mask);
    my $pid = fork;
    if ($pid) { $kids{$pid} = 1 }
    else { $SIG{$_} = 'DEFAULT' for qw(TERM INT CHLD) }
    POSIX::sigprocmask(POSIX::SIG_UNBLOCK(), $mask);
    if (!defined $pid) { warn "mock: fork: $!\n"; close $c; sleep 0.1; next }
    if ($pid) { close $c; next }
    # child: one connection, one request, then exit (Connection: close everywhere)
    close $srv;
    my $req = { sock => $c, status => 0 };
    eval { serve($req); 1 } or do {
        my $err = $@;
        warn "mock: $err" unless $err =~ /^(?:timeout|client gone)/;
        eval { reply($req, $err =~ /^timeout/ ? 408 : 500, 'text/plain', "mock: request failed\n") }
            unless $req->{status} || $err =~ /^client gone/;
    };
    close $c;
    exit 0;
}

sub serve {
    my $req = shift;
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 30;    # a client that stalls mid-request only costs us this child
    my $err = read_request($req);
    alarm 0;
    return reply($req, $err->[0], 'text/plain', "$err->[1]\n") if $err;
    capture($req) unless $req->{path} =~ m{^/_mock/};
    my $allowed;
    for my $r (@ROUTES) {
        next unless $req->{path} =~ $r->[1];
        return $r->[2]->($req) if $r->[0] eq 'ANY' || $r->[0] eq $req->{method};
        $allowed = $r->[0];
    }
    return reply($req, 405, 'application/json', $JSON->encode({ error => 'method not allowed' }),
                 Allow => $allowed) if $allowed;
    reply($req, 404, 'application/json', $JSON->encode({ error => "mock: no route for $req->{path}" }));
}

# ---------------------------------------------------------------- HTTP in
# Fills $req; returns undef, or [status, message] for a request we refuse.
sub read_request {
    my $req = shift;
    my $buf = '';
    until ($buf =~ /\r?\n\r?\n/) {
        return [431, 'header too large'] if length $buf > $MAX_HEAD;
        fill($req, \$buf) or die "client gone\n";
    }
    my ($head, $rest) = split /\r?\n\r?\n/, $buf, 2;
    return [431, 'header too large'] if length $head > $MAX_HEAD;
    my ($line, @lines) = split /\r?\n/, $head;
    my ($method, $target) = ($line // '') =~ m{^([A-Z]+) (\S+) HTTP/1\.[01]$}
        or return [400, 'malformed request line'];
    my %h;
    for (@lines) {
        my ($n, $v) = /^([!#\$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/
            or return [400, 'malformed header line'];
        $n = lc $n;
        $h{$n} = exists $h{$n} ? "$h{$n}, $v" : $v;
    }
    $target =~ s{^https?://[^/]+}{};    # absolute-form
    return [400, 'bad request target'] unless $target =~ m{^/};
    my ($path, $query) = split /\?/, $target, 2;
    @$req{qw(method target path headers)} = ($method, $target, $path, \%h);
    $req->{query} = parse_query($query // '');

    my $te = $h{'transfer-encoding'};
    my $cl = $h{'content-length'};
    return [400, 'both Content-Length and Transfer-Encoding'] if defined $te && defined $cl;
    if (($h{expect} // '') =~ /^100-continue$/i && (defined $te || ($cl // 0) > 0)) {
        write_all($req, "HTTP/1.1 100 Continue\r\n\r\n");    # curl waits for this on big bodies
    }
    if (defined $te) {
        return [400, 'unsupported transfer-encoding'] unless lc $te eq 'chunked';
        my $body = '';
        while (1) {
            my $size_line = read_line($req, \$rest) // return [400, 'truncated chunk'];
            my ($hex) = $size_line =~ /^([0-9A-Fa-f]{1,8})(?:;.*)?$/ or return [400, 'bad chunk size'];
            my $n = hex $hex;
            last if $n == 0;
            return [413, 'body too large'] if length($body) + $n > $MAX_BODY;
            fill($req, \$rest) or return [400, 'truncated chunk'] while length $rest < $n + 2;
            return [400, 'chunk not followed by CRLF'] unless substr($rest, $n, 2) eq "\r\n";
            $body .= substr($rest, 0, $n);
            substr($rest, 0, $n + 2, '');
        }
        while (1) {    # trailers, up to the empty line
            my $t = read_line($req, \$rest) // return [400, 'truncated trailer'];
            last if $t eq '';
        }
        $req->{body} = $body;
    }
    else {
        $cl //= 0;
        return [400, 'bad Content-Length'] unless $cl =~ /^\d{1,12}$/;
        return [413, 'body too large'] if $cl > $MAX_BODY;
        fill($req, \$rest) or return [400, 'body shorter than Content-Length'] while length $rest < $cl;
        $req->{body} = substr($rest, 0, $cl);
    }
    undef;
}

sub fill {
    my ($req, $bufref) = @_;
    my $n = sysread($req->{sock}, my $chunk, 65536);
    return 0 unless $n;
    $$bufref .= $chunk;
    1;
}

sub read_line {
    my ($req, $bufref) = @_;
    while (1) {
        return $1 if $$bufref =~ s/^(.*?)\r?\n//;
        return undef if length $$bufref > $MAX_HEAD || !fill($req, $bufref);
    }
}

sub parse_query {
    my %q;
    for (split /&/, shift) {
        my ($k, $v) = map { my $s = $_ // ''; $s =~ tr/+/ /; $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; $s }
                      split /=/, $_, 2;
        $q{$k} = $v;
    }
    \%q;
}

# The body as a JSON object, or undef when it is not one.
sub json_body {
    my $req = shift;
    return $req->{json} if exists $req->{json};
    my $j = eval { $JSON->decode($req->{body}) };
    $req->{json} = ref $j eq 'HASH' ? $j : undef;
}

# ---------------------------------------------------------------- HTTP out
sub write_all {
    my ($req, $data) = @_;
    while (length $data) {
        my $n = syswrite($req->{sock}, $data);
        die "client gone\n" unless $n;
        substr($data, 0, $n, '');
    }
}

sub send_head {
    my ($req, $status, @hdrs) = @_;
    $req->{status} = $status;
    log_request($req, $status);
    my $head = "HTTP/1.1 $status " . ($REASON{$status} // 'Status') . "\r\n"
             . "Server: aiprov-mock\r\nConnection: close\r\n";
    while (my ($k, $v) = splice @hdrs, 0, 2) { $head .= "$k: $v\r\n" }
    write_all($req, "$head\r\n");
}

sub reply {
    my ($req, $status, $ctype, $body, @hdrs) = @_;
    send_head($req, $status, 'Content-Type' => $ctype, 'Content-Length' => length $body, @hdrs);
    write_all($req, $body);
}

# Provider answers go through here so mock_fail=reset can cut them short.
sub send_json {
    my ($req, $o, $status, $data) = @_;
    my $body = $JSON->encode($data);
    return reply($req, $status, 'application/json', $body) unless $o->{fail} eq 'reset';
    send_head($req, $status, 'Content-Type' => 'application/json', 'Content-Length' => length $body);
    write_all($req, substr($body, 0, int(length($body) / 2)));
    abort($req);
}

# Close the connection mid-answer: the client sees a truncated body.
sub abort {
    my $req = shift;
    log_request($req, 'reset');
    shutdown($req->{sock}, 2);
    close $req->{sock};
    exit 0;
}

# Streams are chunked, so a cut (mock_fail=reset) is detectable: no last chunk.
sub stream_begin {
    my ($req, $o, $ctype) = @_;
    send_head($req, 200, 'Content-Type' => $ctype, 'Cache-Control' => 'no-cache',
              'Transfer-Encoding' => 'chunked');
    $o->{sent} = 0;
}

sub stream_send {
    my ($req, $o, $data) = @_;
    sleep($o->{delay_ms} / 1000) if $o->{sent}++ && $o->{delay_ms};
    write_all($req, sprintf("%x\r\n%s\r\n", length $data, $data));
    abort($req) if $o->{fail} eq 'reset';    # after the first event
}

sub stream_end { write_all($_[0], "0\r\n\r\n") }

sub sse { my ($data, $event) = @_;
          ($event ? "event: $event\n" : '') . 'data: ' . (ref $data ? $JSON->encode($data) : $data) . "\n\n" }

# ---------------------------------------------------------------- state
sub write_file {    # atomic: readers never see a half-written file
    my ($file, $data) = @_;
    my $tmp = "$file.tmp.$$";
    open my $fh, '>:raw', $tmp or die "$tmp: $!\n";
    print $fh $data;
    close $fh or die "$tmp: $!\n";
    rename $tmp, $file or die "rename $file: $!\n";
}

sub read_file {
    my $file = shift;
    open my $fh, '<:raw', $file or return undef;
    local $/;
    scalar <$fh>;
}

sub with_lock {    # serialises read-modify-write of the state between children
    my $code = shift;
    open my $lk, '>>', "$STATE/lock" or die "lock: $!\n";
    flock $lk, LOCK_EX or die "flock: $!\n";
    my @r = $code->();
    close $lk;
    wantarray ? @r : $r[0];
}

sub random_hex {
    open my $fh, '<:raw', '/dev/urandom' or die "urandom: $!\n";
    read($fh, my $b, $_[0]) == $_[0] or die "urandom: short read\n";
    unpack 'H*', $b;
}

# Text when the bytes are UTF-8, else undef (always a scalar: used inside lists).
sub text_or_undef {
    my $s = shift;
    my $t = eval { Encode::decode('UTF-8', $s, Encode::FB_CROAK | Encode::LEAVE_SRC) };
    $t;
}

sub capture {
    my $req = shift;
    my %h = map { $_ => text_or_undef($req->{headers}{$_}) // Encode::decode('latin1', $req->{headers}{$_}) }
            keys %{ $req->{headers} };
    my $rec = { method => $req->{method}, path => $req->{target}, headers => \%h,
                body => text_or_undef($req->{body}), time => time };
    $rec->{body_base64} = encode_base64($req->{body}, '') unless defined $rec->{body};
    with_lock(sub {
        my $seq = (read_file("$STATE/seq") // 0) + 1;
        write_file("$STATE/seq", $seq);
        $rec->{seq} = $seq;
        write_file(sprintf("%s/captured/%04d.json", $STATE, $seq), $JSON->encode($rec));
    });
}

sub captured_files {
    opendir my $d, "$STATE/captured" or return ();
    map { "$STATE/captured/$_->[1]" } sort { $a->[0] <=> $b->[0] }
        map { /^(\d+)\.json$/ ? [$1, $_] : () } readdir $d;
}

# Method and path only: header values, query strings and bodies carry keys.
sub log_request {
    my ($req, $status) = @_;
    sysopen my $fh, "$STATE/requests.log", O_WRONLY | O_APPEND | O_CREAT or return;
    syswrite $fh, sprintf("%s [%d] %s %s %s\n", strftime('%Y-%m-%dT%H:%M:%SZ', gmtime),
                          $$, $req->{method} // '-', $req->{path} // '-', $status);
}

sub code_file { my $c = shift; $c =~ /^[A-Za-z0-9_-]{1,128}$/ ? "$STATE/codes/$c.json" : undef }

sub load_code { my $f = code_file(shift // '') or return undef;
                my $t = read_file($f) // return undef; $JSON->decode($t) }

sub save_code { my ($c, $rec) = @_; write_file(code_file($c), $JSON->encode($rec)) }

# ---------------------------------------------------------------- test hooks
sub mock_captured {
    my $req = shift;
    my @all = map { $JSON->decode(read_file($_)) } captured_files();
    reply($req, 200, 'application/json', $JSON->encode(\@all));
}

sub mock_last {
    my $req = shift;
    my ($last) = reverse captured_files();
    return reply($req, 404, 'application/json', '{"error":"nothing captured"}') unless $last;
    reply($req, 200, 'application/json', read_file($last));
}

sub mock_reset {
    my $req = shift;
    with_lock(sub {
        unlink captured_files(), glob("$STATE/codes/*.json");
        write_file("$STATE/seq", 0);
    });
    reply($req, 200, 'application/json', '{"reset":true}');
}

sub mock_issued {
    my $req = shift;
    my $rec = load_code($req->{query}{code});
    return reply($req, 404, 'application/json', '{"error":"no key issued for this code"}')
        unless $rec && $rec->{issued};
    reply($req, 200, 'application/json', $JSON->encode($rec->{issued}));
}

sub mock_code {
    my $req = shift;
    my $j = json_body($req) // {};
    my ($ch, $m, $b) = ($j->{challenge}, $j->{method} // 'S256', $j->{behavior} // 'ok');
    return reply($req, 400, 'text/plain', "need challenge, method S256|plain, behavior one of @BEHAVIORS\n")
        unless defined $ch && !ref $ch && $m =~ /^(?:S256|plain)$/ && grep { $_ eq $b } @BEHAVIORS;
    my $code = new_code($ch, $m, $b);
    reply($req, 200, 'application/json', $JSON->encode({ code => $code }));
}

# ---------------------------------------------------------------- OpenRouter OAuth
sub new_code {
    my ($challenge, $method, $behavior) = @_;
    my $code = random_hex(16);
    save_code($code, { challenge => $challenge, method => $method, behavior => $behavior,
                       issued_at => time, used => JSON::PP::false });
    $code;
}

sub oauth_authorize {
    my $req = shift;
    my $q = $req->{query};
    my ($cb, $ch, $m) = @$q{qw(callback_url code_challenge code_challenge_method)};
    return reply($req, 400, 'text/plain', "missing or bad callback_url\n")
        unless defined $cb && $cb =~ m{^https?://\S+$};
    return reply($req, 400, 'text/plain', "missing code_challenge\n") unless defined $ch && length $ch;
    return reply($req, 400, 'text/plain', "code_challenge_method must be S256 or plain\n")
        unless defined $m && $m =~ /^(?:S256|plain)$/;
    my $code = new_code($ch, $m, 'ok');
    my ($url, $frag) = split /#/, $cb, 2;
    $url .= ($url =~ /\?/ ? '&' : '?') . "code=$code";
    $url .= "#$frag" if defined $frag;
    reply($req, 302, 'text/plain', "redirecting\n", Location => $url);
}

# OpenRouter's error shape
sub or_error {
    my ($req, $status, $msg) = @_;
    reply($req, $status, 'application/json', $JSON->encode({ error => { message => $msg, code => $status } }));
}

sub oauth_exchange {
    my $req = shift;
    my $j = json_body($req) or return or_error($req, 400, 'Invalid JSON body');
    my ($code, $verifier, $method) = @$j{qw(code code_verifier code_challenge_method)};
    return or_error($req, 400, 'Missing code') unless defined $code && !ref $code;
    # check and consume under the lock: two concurrent exchanges, one winner
    my ($status, $msg, $rec) = with_lock(sub {
        my $rec = load_code($code);
        return (403, 'Invalid code') if !$rec || $rec->{used};
        return (403, 'Code expired') if $rec->{behavior} eq 'expired' || time - $rec->{issued_at} > $CODE_TTL;
        return (400, 'code_challenge_method does not match') if defined $method && $method ne $rec->{method};
        my $ok = defined $verifier && !ref $verifier
            && ($rec->{method} eq 'S256' ? encode_base64url(sha256($verifier)) : $verifier) eq $rec->{challenge};
        return (403, 'Invalid code verifier') unless $ok;
        $rec->{used} = JSON::PP::true;
        save_code($code, $rec);
        (200, undef, $rec);
    });
    return or_error($req, $status, $msg) if $status != 200;

    my $b = $rec->{behavior};
    return or_error($req, 500, 'Internal Server Error') if $b eq 'status500';
    return reply($req, 200, 'text/html', '<html>not json</html>') if $b eq 'garbage';
    return reply($req, 200, 'application/json', '{"user_id":"x"}') if $b eq 'nokey';
    return reply($req, 200, 'application/json', '{"key":"not a key","user_id":"x"}')
        if $b eq 'badkey';
    sleep 10 if $b eq 'slow';
    my $issued = { key => 'sk-or-v1-' . random_hex(32), user_id => 'user_' . random_hex(8) };
    with_lock(sub { my $r = load_code($code); $r->{issued} = $issued; save_code($code, $r) });
    my $body = $JSON->encode($issued);
    $body =~ s/}$/',"padding":"' . ('x' x (2 << 20)) . '"}'/e if $b eq 'huge';
    reply($req, 200, 'application/json', $body);
}

# ---------------------------------------------------------------- providers
# Wraps a provider handler: the provider's own auth check, then the options
# (tokens, delay, failure mode) and the failure modes that need no handler.
sub provider {
    my ($prefix, $handler) = @_;
    sub {
        my $req = shift;
        my $j = json_body($req) // {};
        return unless check_auth($req, $prefix);
        return oai_error($req, 400, 'We could not parse the JSON body of your request.')
            if $req->{method} eq 'POST' && length $req->{body} && !json_body($req) && $prefix ne 'fast';
        my $h = $req->{headers};
        my $num = sub { my $v = shift; defined $v && $v =~ /^\d{1,9}$/ ? $v : undef };
        my $o = { prefix => $prefix, json => $j,
                  p => $num->($j->{mock_prompt_tokens}) // $num->($h->{'x-mock-prompt-tokens'}) // 10,
                  c => $num->($j->{mock_completion_tokens}) // $num->($h->{'x-mock-completion-tokens'}) // 5,
                  delay_ms => $num->($j->{mock_delay_ms}) // $num->($req->{query}{mock_delay_ms}) // 200,
                  fail => $j->{mock_fail} // $req->{query}{mock_fail} // '' };
        $o->{fail} = '' if ref $o->{fail};
        sleep($opt{'delay-ms'} / 1000) if $opt{'delay-ms'};
        my $f = $o->{fail};
        return reply($req, 500, 'application/json', '{"error":{"message":"upstream exploded"}}')
            if $f eq 'status500';
        return reply($req, 429, 'application/json',
                     '{"error":{"message":"rate limited (mock)","type":"rate_limit_error"}}', 'Retry-After' => 1)
            if $f eq 'status429';
        return reply($req, 200, 'application/json', 'not json') if $f eq 'garbage';
        if ($f eq 'hang') { log_request($req, 'hang'); sleep 60; exit 0 }
        $handler->($req, $o);
    };
}

sub oai_error {
    my ($req, $status, $msg, $code) = @_;
    reply($req, $status, 'application/json', $JSON->encode({ error => {
        message => $msg, type => 'invalid_request_error', code => $code } }));
}

sub rejected { my $k = shift; !defined $k || !length $k || $k =~ /REJECT/ }

# Each provider's own way of taking (or refusing) the key; false once answered.
sub check_auth {
    my ($req, $prefix) = @_;
    my $h = $req->{headers};
    my $deny = sub { reply($req, $_[0], 'application/json', $_[1]); 0 };
    my ($bearer) = ($h->{authorization} // '') =~ /^Bearer\s+(\S+)\s*$/i;
    return 1 if $prefix eq 'fast';
    if ($prefix eq 'ollama') {    # takes no key: one arriving here leaked
        return 1 unless defined $h->{authorization};
        return $deny->(400, '{"error":"mock: ollama takes no key, yet an Authorization header arrived"}');
    }
    if ($prefix eq 'anthropic') {
        return $deny->(400, '{"type":"error","error":{"type":"invalid_request_error",'
                          . '"message":"mock: an Authorization header must not reach Anthropic"}}')
            if defined $h->{authorization};
        return 1 if !rejected($h->{'x-api-key'}) && ($h->{'anthropic-version'} // '') eq '2023-06-01';
        return $deny->(401, '{"type":"error","error":{"type":"authentication_error",'
                          . '"message":"invalid x-api-key"}}');
    }
    if ($prefix =~ /^gemini/) {    # a key in the URL ends up in access logs: a module bug
        return $deny->(400, '{"error":{"code":400,"message":"mock: API key must not be in the query string",'
                          . '"status":"INVALID_ARGUMENT"}}') if exists $req->{query}{key};
        if ($prefix eq 'gemini_native') {
            return 1 unless rejected($h->{'x-goog-api-key'});
            return $deny->(401, '{"error":{"code":401,"message":"API key not valid","status":"UNAUTHENTICATED"}}');
        }
        $bearer //= $h->{'x-goog-api-key'};    # the OpenAI-compatible routes take either
    }
    return 1 unless rejected($bearer);
    return $deny->(401, '{"valid":false}') if $req->{path} =~ m{/check-api-key$};
    # echo part of the key like OpenAI does: the module must not pass it through
    oai_error($req, 401, 'Incorrect API key provided: ' . substr($bearer // '', 0, 12) . "\x{2026}",
              'invalid_api_key');
    0;
}

sub usage_oai {
    my $o = shift;
    { prompt_tokens => $o->{p}, completion_tokens => $o->{c}, total_tokens => $o->{p} + $o->{c} };
}

sub oai_models {
    my ($req, $o) = @_;
    send_json($req, $o, 200, { object => 'list',
                               data => [map { { id => $_, object => 'model' } } qw(mock-model-a mock-model-b)] });
}

sub oai_chat {
    my ($req, $o) = @_;
    my $j = $o->{json};
    return reply($req, 400, 'application/json', '{"message":"invalid request: stream_options is not supported"}')
        if $o->{prefix} eq 'cohere' && exists $j->{stream_options};
    my $model = $j->{model} // 'mock-model';
    my $nousage = $o->{fail} eq 'nousage';
    unless ($j->{stream}) {
        my $ans = { id => 'chatcmpl-1', object => 'chat.completion', model => $model,
                    choices => [{ index => 0, message => { role => 'assistant', content => 'Hello from mock' },
                                  finish_reason => 'stop' }] };
        $ans->{usage} = usage_oai($o) unless $nousage;
        return send_json($req, $o, 200, $ans);
    }
    my $include = ref $j->{stream_options} eq 'HASH' && $j->{stream_options}{include_usage};
    my $final_usage = !$nousage && ($include || $o->{prefix} eq 'openrouter');
    my $groq_usage  = !$nousage && !$final_usage && $o->{prefix} eq 'groq';
    stream_begin($req, $o, 'text/event-stream');
    my @parts = ('Hel', 'lo from', ' mock');
    for my $i (0 .. $#parts) {
        my $last = $i == $#parts;
        my $ev = { id => 'chatcmpl-1', object => 'chat.completion.chunk', model => $model,
                   choices => [{ index => 0, delta => { content => $parts[$i] },
                                 finish_reason => $last ? 'stop' : undef }] };
        $ev->{x_groq} = { usage => usage_oai($o) } if $last && $groq_usage;
        stream_send($req, $o, sse($ev));
    }
    stream_send($req, $o, sse({ id => 'chatcmpl-1', object => 'chat.completion.chunk', model => $model,
                                choices => [], usage => usage_oai($o) })) if $final_usage;
    stream_send($req, $o, sse('[DONE]'));
    stream_end($req);
}

sub anthropic_messages {
    my ($req, $o) = @_;
    my $model = $o->{json}{model} // 'claude-mock';
    my $nousage = $o->{fail} eq 'nousage';
    unless ($o->{json}{stream}) {
        my $ans = { id => 'msg_1', type => 'message', role => 'assistant', model => $model,
                    content => [{ type => 'text', text => 'Hello' }], stop_reason => 'end_turn' };
        $ans->{usage} = { input_tokens => $o->{p}, output_tokens => $o->{c} } unless $nousage;
        return send_json($req, $o, 200, $ans);
    }
    my $msg = { id => 'msg_1', type => 'message', role => 'assistant', model => $model, content => [] };
    $msg->{usage} = { input_tokens => $o->{p}, output_tokens => 1 } unless $nousage;
    my $delta = { type => 'message_delta', delta => { stop_reason => 'end_turn' } };
    $delta->{usage} = { output_tokens => $o->{c} } unless $nousage;    # cumulative, not an increment
    stream_begin($req, $o, 'text/event-stream');
    stream_send($req, $o, sse(@$_)) for
        [{ type => 'message_start', message => $msg }, 'message_start'],
        [{ type => 'content_block_start', index => 0, content_block => { type => 'text', text => '' } },
         'content_block_start'],
        [{ type => 'content_block_delta', index => 0, delta => { type => 'text_delta', text => 'Hel' } }, 'content_block_delta'],
        [{ type => 'content_block_delta', index => 0, delta => { type => 'text_delta', text => 'lo' } }, 'content_block_delta'],
        [{ type => 'content_block_stop', index => 0 }, 'content_block_stop'],
        [$delta, 'message_delta'],
        [{ type => 'message_stop' }, 'message_stop'];
    stream_end($req);
}

# Native Ollama: like the real one, "stream" defaults to true.
sub ollama_chat {
    my ($req, $o) = @_;
    my $model = $o->{json}{model} // 'mock:latest';
    my $stream = $o->{json}{stream} // JSON::PP::true;
    my $done = { model => $model, message => { role => 'assistant', content => $stream ? '' : 'hi' },
                 done => JSON::PP::true, done_reason => 'stop' };
    @$done{qw(prompt_eval_count eval_count)} = ($o->{p}, $o->{c}) unless $o->{fail} eq 'nousage';
    return send_json($req, $o, 200, $done) unless $stream;
    stream_begin($req, $o, 'application/x-ndjson');
    stream_send($req, $o, $JSON->encode({ model => $model, message => { role => 'assistant', content => $_ },
                                          done => JSON::PP::false }) . "\n") for 'h', 'i';
    stream_send($req, $o, $JSON->encode($done) . "\n");
    stream_end($req);
}
