# Configuration errors stop "httpd -t" with a message naming the directive;
# a good configuration says "Syntax OK". Each case is a small httpd.conf of
# its own under t/tmp, differing from the good one in one line.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use lib 't/lib', 't/fixtures';
use AiprovTest qw(:DEFAULT t_dir modules_conf);
use ApiAssert;
use File::Path qw(make_path remove_tree);
use IO::Socket::INET ();
use MIME::Base64 qw(encode_base64);

my $T    = t_dir();
my $dir  = "$T/tmp/configtest";
my $bin  = httpd_bin();
my $so   = module_so();
remove_tree($dir);
make_path($dir);

# LoadModule lines for what the test configs need, from the harness's list.
my %load;
{
    open my $fh, '<', modules_conf() or die modules_conf() . ": $!";
    while (<$fh>) { $load{$1} = $2 if /^LoadModule\s+(\w+)\s+(\S+)/ }
}
my $load = join '', map { "LoadModule ${_}_module " . ($load{"${_}_module"} // "missing-$_") . "\n" }
               qw(mpm_event authz_core dbd);

my $port = do {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0) or die "socket: $!";
    $s->sockport;
};

sub spew {
    my ($file, $text, $mode) = @_;
    unlink $file;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
    chmod $mode, $file if defined $mode;
    $file;
}
sub slurp { my $f = shift; open my $fh, '<', $f or return ''; local $/; <$fh> }

my $good_key = "$T/conf/aiprov.key";
my %KEYFILE = (
    good    => $good_key,
    bad     => "$T/conf/bad.key",
    loose   => "$T/conf/loose.key",
    missing => "$dir/nonexistent.key",
    short   => spew("$dir/short.key", encode_base64("\x01" x 31), 0600),
    long    => spew("$dir/long.key", encode_base64("\x02" x 33), 0600),
    empty   => spew("$dir/empty.key", '', 0600),
    group   => spew("$dir/group.key", slurp($good_key), 0640),
    world   => spew("$dir/world.key", slurp($good_key), 0604),
    hex     => spew("$dir/hex.key", unpack('H*', "\x03" x 32) . "\n", 0600),
);
make_path("$dir/keydir");
$KEYFILE{directory} = "$dir/keydir";
my @SECRETS = grep { length } map { my $c = slurp($KEYFILE{$_} // $_); $c =~ s/\s+\z//; $c }
              qw(good bad loose short long group world hex), "$T/conf/other.key";

my $n = 0;
sub conf_text {
    my (%o) = @_;
    my $location = $o{location} // "AIProvEncryptionKeyFile $good_key";
    <<"EOF";
ServerRoot "$dir"
DefaultRuntimeDir "$dir"
ServerName localhost
Listen 127.0.0.1:$port
PidFile "$dir/httpd.pid"
ErrorLog "$dir/error_log"
$load
LoadModule aiprov_module $so
DBDriver sqlite3
DBDParams $dir/never-opened.db
@{[ $o{server} // '' ]}
<Location /api/ai-providers>
    SetHandler aiprov
    $location
</Location>
EOF
}
sub configtest {
    my (%o) = @_;
    my $conf = spew("$dir/httpd-" . ++$n . '.conf', conf_text(%o));
    my $out = `'$bin' -t -f '$conf' 2>&1`;
    ($? >> 8, $out);
}

subtest 'the good configuration' => sub {
    my ($rc, $out) = configtest();
    is $rc, 0, 'exit 0';
    like $out, qr/Syntax OK/, 'Syntax OK';
    ok no_secret_in($out, @SECRETS), 'no key material in the output';
};

subtest 'every directive with a good value, in every scope' => sub {
    my $all = join "\n    ",
        "AIProvEncryptionKeyFile $good_key $T/conf/other.key",
        'AIProvSessionQuery "SELECT user_id FROM session WHERE token = %s"',
        'AIProvTrustRemoteUser On', 'AIProvTrustRemoteUser Off',
        'AIProvOpenRouterAuthURL https://openrouter.example.test/auth',
        'AIProvOpenRouterExchangeURL http://127.0.0.1:9/api/v1/auth/keys',
        'AIProvProviderURL openai https://api.openai.example.test/v1',
        'AIProvProviderURL ollama http://127.0.0.1:11434',
        'AIProvUpstreamTimeout 1', 'AIProvUpstreamTimeout 300';
    my $server = "$all\n<VirtualHost 127.0.0.1:$port>\n    $all\n    <Directory $dir>\n    $all\n    </Directory>\n</VirtualHost>";
    my ($rc, $out) = configtest(location => $all, server => $server);
    is $rc, 0, 'exit 0' or diag $out;
    like $out, qr/Syntax OK/, 'Syntax OK';
};

my @CASES = (
    [ 'key file missing',              'AIProvEncryptionKeyFile', "AIProvEncryptionKeyFile $KEYFILE{missing}", qr/nonexistent\.key/ ],
    [ 'key file not a key (bad.key)',  'AIProvEncryptionKeyFile', "AIProvEncryptionKeyFile $KEYFILE{bad}" ],
    [ 'key file 0644 (loose.key)',     'AIProvEncryptionKeyFile', "AIProvEncryptionKeyFile $KEYFILE{loose}" ],
    [ 'key file 0640',                 'AIProvEncryptionKeyFile', "AIProvEncryptionKeyFile $KEYFILE{group}" ],
    [ 'key file 0604',                 'AIProvEncryptionKeyFile', "AIProvEncryptionKeyFile $KEYFILE{world}" ],
    [ 'key of 31 bytes',               'AIProvEncryptionKeyFile', "AIProvEncryptionKeyFile $KEYFILE{short}" ],
    [ 'key of 33 bytes',               'AIProvEncryptionKeyFile', "AIProvEncryptionKeyFile $KEYFILE{long}" ],
    [ 'empty key file',                'AIProvEncryptionKeyFile', "AIProvEncryptionKeyFile $KEYFILE{empty}" ],
    [ 'hex, not base64',               'AIProvEncryptionKeyFile', "AIProvEncryptionKeyFile $KEYFILE{hex}" ],
    [ 'a directory',                   'AIProvEncryptionKeyFile', "AIProvEncryptionKeyFile $KEYFILE{directory}" ],
    [ 'a bad key after a good one',    'AIProvEncryptionKeyFile', "AIProvEncryptionKeyFile $good_key $KEYFILE{loose}" ],
    [ 'no argument',                   'AIProvEncryptionKeyFile', 'AIProvEncryptionKeyFile' ],
    [ 'TrustRemoteUser Maybe',         'AIProvTrustRemoteUser', 'AIProvTrustRemoteUser Maybe' ],
    [ 'UpstreamTimeout 0',             'AIProvUpstreamTimeout', 'AIProvUpstreamTimeout 0' ],
    [ 'UpstreamTimeout abc',           'AIProvUpstreamTimeout', 'AIProvUpstreamTimeout abc' ],
    [ 'UpstreamTimeout -5',            'AIProvUpstreamTimeout', 'AIProvUpstreamTimeout -5' ],
    [ 'UpstreamTimeout 10abc',         'AIProvUpstreamTimeout', 'AIProvUpstreamTimeout 10abc' ],
    [ 'ProviderURL unknown provider',  'AIProvProviderURL', 'AIProvProviderURL nosuchprovider http://x' ],
    [ 'ProviderURL ftp',               'AIProvProviderURL', 'AIProvProviderURL openai ftp://x' ],
    [ 'ProviderURL one argument',      'AIProvProviderURL', 'AIProvProviderURL openai' ],
    [ 'OpenRouterAuthURL not a URL',   'AIProvOpenRouterAuthURL', 'AIProvOpenRouterAuthURL not-a-url' ],
    [ 'OpenRouterAuthURL ftp',         'AIProvOpenRouterAuthURL', 'AIProvOpenRouterAuthURL ftp://openrouter.ai/auth' ],
    [ 'OpenRouterExchangeURL not a URL', 'AIProvOpenRouterExchangeURL', 'AIProvOpenRouterExchangeURL not-a-url' ],
    [ 'SessionQuery without %s',       'AIProvSessionQuery', 'AIProvSessionQuery "SELECT user_id FROM session"' ],
    [ 'SessionQuery with two %s',      'AIProvSessionQuery',
      'AIProvSessionQuery "SELECT user_id FROM session WHERE token = %s AND user_agent = %s"' ],
);
for my $c (@CASES) {
    my ($name, $directive, $line, $also) = @$c;
    subtest $name => sub {
        my $location = $line =~ /^AIProvEncryptionKeyFile/ ? $line : "AIProvEncryptionKeyFile $good_key\n    $line";
        my ($rc, $out) = configtest(location => $location);
        isnt $rc, 0, 'non-zero exit';
        unlike $out, qr/Syntax OK/, 'no "Syntax OK"';
        like $out, qr/\Q$directive\E/, "the message names $directive" or diag $out;
        like $out, $also, 'and the problem' if $also;
        ok no_secret_in($out, @SECRETS), 'no key material in the message';
    };
}

subtest 'the same errors at server level' => sub {
    for my $line ("AIProvEncryptionKeyFile $KEYFILE{loose}", 'AIProvUpstreamTimeout 0',
                  'AIProvProviderURL openai ftp://x') {
        my ($directive) = $line =~ /^(\S+)/;
        my ($rc, $out) = configtest(server => $line);
        isnt $rc, 0, "$directive at server level: non-zero exit";
        like $out, qr/\Q$directive\E/, 'names the directive';
        ok no_secret_in($out, @SECRETS), 'no key material in the message';
    }
};

done_testing();
